// Template registry: golden images and their immutable versions. A version is stored as a raw image,
// padded to 4096 bytes, at <data>/templates/<template-id>/<version-id>.img. Everything is written to a
// temporary name first and renamed only once the database row exists, so a failure leaves nothing behind.
import { randomUUID } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { access, mkdir, readdir, rename, rm, stat, truncate, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Kysely } from 'kysely';
import type { Database, TemplateRow, TemplateVersionRow } from '../../db/schema.ts';
import { TemplateRepository } from '../../db/repositories/template.repository.ts';
import { isUniqueViolation } from '../../db/repositories/executor.ts';
import { roundUpToBlock } from '../../engine/block-size.ts';
import { close, fdatasync, fsyncDir, open } from '../../engine/fs-callbacks.ts';
import { copySparse, hashFile } from '../../engine/sparse-copy.ts';
import { SparseImageWriter } from '../../engine/sparse-image-writer.ts';
import { AppError, errorMessage } from '../../errors.ts';
import type { EventBus } from '../events/event-bus.ts';
import { assertSelfContained, convertToRaw, imageInfo, QemuImgError, UnsafeImageError, type ImageFormat } from './qemu-img.ts';
import type { TemplateVersionDto, TemplateDto } from '../../dto.ts';
export type { TemplateVersionDto, TemplateDto } from '../../dto.ts';

export const DEFAULT_MAX_IMAGE_BYTES = 2 * 1024 ** 4;



export type TemplateWithVersionsDto = TemplateDto & { versions: TemplateVersionDto[] };

export function toVersionDto(row: TemplateVersionRow): TemplateVersionDto {
  return {
    id: row.id,
    templateId: row.template_id,
    version: row.version,
    sizeBytes: Number(row.size_bytes),
    sha256: row.sha256,
    format: row.format,
    createdAt: new Date(row.created_at).toISOString(),
  };
}

function toTemplateDto(row: TemplateRow, versionCount: number, latestVersion: number | null): TemplateDto {
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    createdAt: new Date(row.created_at).toISOString(),
    versionCount,
    latestVersion,
  };
}

const TEMP_PREFIX = '.incoming-';
/** How much of an upload is still read (and dropped) after writing it failed, so the client gets the answer. */
const DRAIN_AFTER_FAILURE_BYTES = 256 * 1024 * 1024;
const DRAIN_AFTER_FAILURE_MS = 10_000;

export class TemplateService {
  #db: Kysely<Database>;
  #repo = new TemplateRepository();
  #events: EventBus;
  readonly templatesDir: string;

  #maxImageBytes: number;

  constructor(db: Kysely<Database>, events: EventBus, dataDir: string, options: { maxImageBytes?: number } = {}) {
    this.#db = db;
    this.#events = events;
    this.templatesDir = path.join(dataDir, 'templates');
    this.#maxImageBytes = options.maxImageBytes ?? DEFAULT_MAX_IMAGE_BYTES;
  }

  versionImagePath(templateId: string, versionId: string): string {
    return path.join(this.templatesDir, templateId, `${versionId}.img`);
  }

  async list(): Promise<TemplateDto[]> {
    const [rows, counts] = await Promise.all([this.#repo.list(this.#db), this.#repo.versionCounts(this.#db)]);
    const byTemplate = new Map(counts.map((c) => [c.template_id, c]));
    return rows.map((r) => toTemplateDto(r, Number(byTemplate.get(r.id)?.count ?? 0), byTemplate.get(r.id)?.latest ?? null));
  }

  async get(id: string): Promise<TemplateWithVersionsDto> {
    const row = await this.#repo.get(this.#db, id);
    if (!row) throw new AppError('TEMPLATE_NOT_FOUND', `template ${id} does not exist`);
    const versions = await this.#repo.listVersions(this.#db, id);
    return {
      ...toTemplateDto(row, versions.length, versions.at(-1)?.version ?? null),
      versions: versions.map(toVersionDto),
    };
  }

  async getVersion(id: string): Promise<TemplateVersionRow> {
    const row = await this.#repo.getVersion(this.#db, id);
    if (!row) throw new AppError('TEMPLATE_VERSION_NOT_FOUND', `template version ${id} does not exist`);
    return row;
  }

  async create(input: { name: string; description?: string }): Promise<TemplateDto> {
    let row: TemplateRow;
    try {
      row = await this.#repo.insert(this.#db, { id: randomUUID(), name: input.name, description: input.description ?? '' });
    } catch (err) {
      if (isUniqueViolation(err)) throw new AppError('NAME_TAKEN', `a template named "${input.name}" already exists`, { field: 'name' });
      throw err;
    }
    this.#events.emit('template.created', { templateId: row.id, name: row.name });
    return toTemplateDto(row, 0, null);
  }

  /**
   * Deletes a template, its versions and their image files. Replicas are copies with no reference to
   * these files, so clones served from them are not affected.
   */
  async delete(id: string): Promise<void> {
    const deleted = await this.#repo.delete(this.#db, id);
    if (!deleted) throw new AppError('TEMPLATE_NOT_FOUND', `template ${id} does not exist`);
    await rm(path.join(this.templatesDir, id), { recursive: true, force: true });
    this.#events.emit('template.deleted', { templateId: id });
  }

  /** Adds a version from a byte stream (an HTTP upload), never holding the whole image in memory. */
  async addVersionFromStream(templateId: string, body: AsyncIterable<Uint8Array>, format: ImageFormat): Promise<TemplateVersionDto> {
    await this.#requireTemplate(templateId);
    const versionId = randomUUID();
    const dir = path.join(this.templatesDir, templateId);
    await mkdir(dir, { recursive: true });
    const incoming = path.join(dir, `${TEMP_PREFIX}${versionId}.upload`);
    const converted = path.join(dir, `${TEMP_PREFIX}${versionId}.raw`);
    try {
      if (format === 'raw') {
        const result = await this.#receiveSparse(body, incoming);
        if (result.logicalBytes === 0) throw new AppError('IMAGE_INVALID', 'the image is empty');
        return await this.#register(templateId, versionId, format, incoming, result.sizeBytes, result.sha256);
      }
      await this.#receiveSparse(body, incoming);
      await this.#convert(incoming, format, converted, 'the uploaded image');
      const { sizeBytes, sha256 } = await this.#padAndHash(converted);
      return await this.#register(templateId, versionId, format, converted, sizeBytes, sha256);
    } catch (err) {
      throw await this.#explainFailure(templateId, err);
    } finally {
      await unlink(incoming).catch(() => {});
      await unlink(converted).catch(() => {});
    }
  }

  /** Adds a version from an image file already on the appliance. */
  async addVersionFromPath(templateId: string, sourcePath: string, format: ImageFormat): Promise<TemplateVersionDto> {
    await this.#requireTemplate(templateId);
    if (!path.isAbsolute(sourcePath)) throw new AppError('VALIDATION_FAILED', 'sourcePath: must be an absolute path', { field: 'sourcePath' });
    try {
      const info = await stat(sourcePath);
      if (!info.isFile()) throw new AppError('VALIDATION_FAILED', 'sourcePath: not a regular file', { field: 'sourcePath' });
      await access(sourcePath, fsConstants.R_OK);
    } catch (err) {
      if (err instanceof AppError) throw err;
      throw new AppError('VALIDATION_FAILED', `sourcePath: cannot read ${sourcePath} (${(err as NodeJS.ErrnoException).code ?? errorMessage(err)})`, {
        field: 'sourcePath',
      });
    }
    const versionId = randomUUID();
    const dir = path.join(this.templatesDir, templateId);
    await mkdir(dir, { recursive: true });
    const temp = path.join(dir, `${TEMP_PREFIX}${versionId}.raw`);
    try {
      if (format === 'raw') {
        const result = await copySparse(sourcePath, temp, { sync: false });
        if (result.logicalBytes === 0) throw new AppError('IMAGE_INVALID', 'the image is empty');
        return await this.#register(templateId, versionId, format, temp, result.sizeBytes, result.sha256);
      }
      await this.#convert(sourcePath, format, temp);
      const { sizeBytes, sha256 } = await this.#padAndHash(temp);
      return await this.#register(templateId, versionId, format, temp, sizeBytes, sha256);
    } catch (err) {
      throw await this.#explainFailure(templateId, err);
    } finally {
      await unlink(temp).catch(() => {});
    }
  }

  /** Removes files under templates/ that no row knows: leftovers of uploads cut short by a crash. */
  async sweepOrphans(): Promise<string[]> {
    const removed: string[] = [];
    let dirs: string[];
    try {
      dirs = await readdir(this.templatesDir);
    } catch {
      return removed;
    }
    const versions = await this.#repo.allVersionIds(this.#db);
    const templates = new Set((await this.#repo.list(this.#db)).map((t) => t.id));
    const known = new Set(versions.map((v) => `${v.template_id}/${v.id}.img`));
    for (const dir of dirs) {
      const full = path.join(this.templatesDir, dir);
      if (!templates.has(dir)) {
        await rm(full, { recursive: true, force: true });
        removed.push(full);
        continue;
      }
      for (const file of await readdir(full)) {
        if (!known.has(`${dir}/${file}`)) {
          await rm(path.join(full, file), { force: true, recursive: true });
          removed.push(path.join(full, file));
        }
      }
    }
    return removed;
  }

  /**
   * A template deleted while one of its versions was being added takes its directory, and the temporary
   * files in it, along: whatever then failed (a vanished file, the converter unable to open its input) is
   * reported as the template being gone, and a directory this upload re-created is removed. A full disk
   * anywhere on the way is reported as such.
   */
  async #explainFailure(templateId: string, err: unknown): Promise<unknown> {
    let gone = err instanceof AppError && err.code === 'TEMPLATE_NOT_FOUND';
    if (!gone) {
      try {
        gone = !(await this.#repo.get(this.#db, templateId));
      } catch {
        return mapIoError(err);
      }
    }
    if (!gone) return mapIoError(err);
    await rm(path.join(this.templatesDir, templateId), { recursive: true, force: true }).catch(() => {});
    return err instanceof AppError && err.code === 'TEMPLATE_NOT_FOUND'
      ? err
      : new AppError('TEMPLATE_NOT_FOUND', `template ${templateId} was deleted during the upload`);
  }

  async #requireTemplate(id: string): Promise<void> {
    if (!(await this.#repo.get(this.#db, id))) throw new AppError('TEMPLATE_NOT_FOUND', `template ${id} does not exist`);
  }

  async #receiveSparse(body: AsyncIterable<Uint8Array>, file: string) {
    const fd = await open(file, 'wx', 0o644);
    try {
      const writer = new SparseImageWriter(fd);
      let failure: { err: unknown } | undefined;
      let dropped = 0;
      let dropUntil = 0;
      for await (const chunk of body) {
        if (!failure) {
          try {
            await writer.write(chunk);
          } catch (err) {
            failure = { err };
            dropUntil = Date.now() + DRAIN_AFTER_FAILURE_MS;
          }
          continue;
        }
        // Leaving the loop destroys the request and with it the connection, and a client still sending
        // would see a reset instead of the error response: read and drop the rest of the upload, bounded.
        dropped += chunk.length;
        if (dropped > DRAIN_AFTER_FAILURE_BYTES || Date.now() > dropUntil) break;
      }
      if (failure) throw failure.err;
      return await writer.finish();
    } catch (err) {
      throw mapIoError(err);
    } finally {
      await close(fd);
    }
  }

  /** `label` names the source in messages instead of its path (an upload's temporary file means nothing to a client). */
  async #convert(source: string, format: ImageFormat, destination: string, label?: string): Promise<void> {
    try {
      await assertSelfContained(source, format);
      // A few KiB of qcow2 can declare petabytes: converting, hashing and promoting that would take hours
      // and fill the disk with zero scans, so the declared size is checked before any of it starts.
      const { virtualSizeBytes } = await imageInfo(source, format);
      if (virtualSizeBytes > this.#maxImageBytes) {
        throw new AppError('IMAGE_TOO_LARGE', `the ${format} image's virtual size ${virtualSizeBytes} bytes exceeds the limit of ${this.#maxImageBytes} bytes (THICKET_MAX_IMAGE_BYTES)`, {
          format,
          virtualSizeBytes,
          maxImageBytes: this.#maxImageBytes,
        });
      }
      await convertToRaw(source, format, destination);
    } catch (err) {
      if (err instanceof UnsafeImageError) throw new AppError('IMAGE_INVALID', `refusing the ${format} image: ${err.message}`, { format, reason: err.message });
      if (err instanceof QemuImgError && /No space left on device/i.test(err.message)) {
        throw new AppError('INSUFFICIENT_SPACE', 'not enough space in the data directory for this image', { format, converter: err.message });
      }
      if (err instanceof QemuImgError) {
        const message = label ? err.message.split(`'${source}'`).join(label).split(source).join(label) : err.message;
        throw new AppError('IMAGE_INVALID', `cannot convert the ${format} image: ${message}`, { format, converter: message });
      }
      throw err;
    }
  }

  async #padAndHash(file: string): Promise<{ sizeBytes: number; sha256: string }> {
    const { size } = await stat(file);
    if (size === 0) throw new AppError('IMAGE_INVALID', 'the image is empty');
    const sizeBytes = roundUpToBlock(size);
    // Padding by truncate leaves a hole, which reads (and hashes) as zeroes.
    if (sizeBytes !== size) await truncate(file, sizeBytes);
    return hashFile(file);
  }

  async #register(templateId: string, versionId: string, format: ImageFormat, tempFile: string, sizeBytes: number, sha256: string) {
    const finalPath = this.versionImagePath(templateId, versionId);
    const fd = await open(tempFile, 'r+');
    try {
      await fdatasync(fd);
    } finally {
      await close(fd);
    }
    const row = await this.#db.transaction().execute(async (trx) => {
      const template = await this.#repo.getForUpdate(trx, templateId);
      if (!template) throw new AppError('TEMPLATE_NOT_FOUND', `template ${templateId} was deleted during the upload`);
      const version = await this.#repo.nextVersionNumber(trx, templateId);
      const inserted = await this.#repo.insertVersion(trx, { id: versionId, template_id: templateId, version, size_bytes: sizeBytes, sha256, format });
      // Renamed inside the transaction: if the rename fails the row is rolled back; if the commit fails
      // the file is removed below. Either way file and row exist together or not at all.
      await rename(tempFile, finalPath);
      await fsyncDir(path.dirname(finalPath));
      return inserted;
    }).catch(async (err) => {
      await unlink(finalPath).catch(() => {});
      throw err;
    });
    this.#events.emit('template.version.created', { templateId, templateVersionId: row.id, version: row.version, sizeBytes, sha256 });
    return toVersionDto(row);
  }
}

function mapIoError(err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOSPC') return new AppError('INSUFFICIENT_SPACE', 'not enough space in the data directory for this image');
  return err;
}
