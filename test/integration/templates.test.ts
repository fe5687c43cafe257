// Templates and their versions through the HTTP API on both databases: registration, uploads in every
// supported format (converted by the real qemu-img), imports from a path, rejected images leaving nothing
// behind, and template deletion leaving replicas untouched.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_KINDS } from '../helpers/databases.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';
import {
  createTemplate,
  defaultPools,
  exists,
  halfZeroImage,
  listFilesRecursive,
  mountSmallTmpfs,
  paddedSha256,
  pollUntil,
  promoteAndWait,
  qemuImgConvert,
  replicaFile,
  roundUp4k,
  sha256,
  sha256File,
  TempDirs,
  uniqueName,
  uploadVersion,
  writeFileBytes,
} from '../helpers/registry-fixtures.ts';

const CONVERTED_FORMATS = ['qcow2', 'vmdk', 'vhdx', 'vdi'] as const;
const execFileAsync = promisify(execFile);
const randomImage = (size: number) => randomBytes(size);

describe.each(DATABASE_KINDS)('templates and versions (%s)', (kind) => {
  let t: TestThicket;
  const temp = new TempDirs();

  beforeAll(async () => {
    t = await startTestThicket(kind);
  });
  afterAll(async () => {
    await t?.destroy();
    await temp.cleanup();
  });

  const templateDir = (templateId: string) => path.join(t.dataDir, 'templates', templateId);

  async function versionsOf(templateId: string): Promise<any[]> {
    const { status, body } = await t.json('GET', `/api/v1/templates/${templateId}`);
    expect(status).toBe(200);
    return body.versions;
  }

  describe('templates', () => {
    it('creates a template with 201 and shows it in the list and by id', async () => {
      const name = uniqueName('win11');
      const created = await t.json('POST', '/api/v1/templates', { name, description: 'Windows 11 golden image' });
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({ name, description: 'Windows 11 golden image', versionCount: 0, latestVersion: null });
      expect(created.body.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(Number.isNaN(Date.parse(created.body.createdAt))).toBe(false);

      const list = await t.json('GET', '/api/v1/templates');
      expect(list.status).toBe(200);
      expect(list.body.find((x: any) => x.id === created.body.id)).toMatchObject({ name, versionCount: 0, latestVersion: null });

      const got = await t.json('GET', `/api/v1/templates/${created.body.id}`);
      expect(got.status).toBe(200);
      expect(got.body).toMatchObject({ id: created.body.id, name, description: 'Windows 11 golden image', versions: [] });
    });

    it('defaults the description to an empty string', async () => {
      const created = await t.json('POST', '/api/v1/templates', { name: uniqueName('plain') });
      expect(created.status).toBe(201);
      expect(created.body.description).toBe('');
    });

    it('rejects a second template with the same name with 409 NAME_TAKEN', async () => {
      const name = uniqueName('dup');
      expect((await t.json('POST', '/api/v1/templates', { name })).status).toBe(201);
      const second = await t.json('POST', '/api/v1/templates', { name, description: 'again' });
      expect(second.status).toBe(409);
      expect(second.body.error.code).toBe('NAME_TAKEN');
      expect(second.body.error.details.field).toBe('name');
      const list = await t.json('GET', '/api/v1/templates');
      expect(list.body.filter((x: any) => x.name === name)).toHaveLength(1);
    });

    it('rejects missing, wrong-typed and unknown template fields with 400 naming the field', async () => {
      const cases: Array<[unknown, string]> = [
        [{}, 'name'],
        [{ description: 'no name' }, 'name'],
        [{ name: 7 }, 'name'],
        [{ name: null }, 'name'],
        [{ name: '' }, 'name'],
        [{ name: '-leading-dash' }, 'name'],
        [{ name: 'slash/inside' }, 'name'],
        [{ name: 'y'.repeat(65) }, 'name'],
        [{ name: uniqueName('t'), description: 5 }, 'description'],
        [{ name: uniqueName('t'), description: 'd'.repeat(4097) }, 'description'],
        [{ name: uniqueName('t'), owner: 'me' }, '(body)'],
        [[{ name: 'x' }], '(body)'],
        ['null', '(body)'],
      ];
      for (const [input, field] of cases) {
        const { status, body } = await t.json('POST', '/api/v1/templates', input);
        expect(status, JSON.stringify(input)).toBe(400);
        expect(body.error.code).toBe('VALIDATION_FAILED');
        expect(body.error.details.map((d: any) => d.field), JSON.stringify(input)).toContain(field);
      }
    });

    it('rejects malformed JSON with 400 INVALID_JSON', async () => {
      for (const text of ['{"name":', '{name: "x"}', '']) {
        const { status, body } = await t.json('POST', '/api/v1/templates', text === '' ? undefined : text);
        expect(status, text).toBe(400);
        expect(body.error.code).toBe('INVALID_JSON');
      }
    });

    it('answers 404 for unknown and malformed template ids', async () => {
      for (const id of ['00000000-0000-4000-8000-000000000000', 'nope', '123']) {
        for (const [method, suffix] of [
          ['GET', ''],
          ['DELETE', ''],
        ] as const) {
          const res = await t.json(method, `/api/v1/templates/${id}${suffix}`);
          expect(res.status, `${method} ${id}`).toBe(404);
          expect(res.body.error.code).toBe('TEMPLATE_NOT_FOUND');
        }
        const upload = await uploadVersion(t, id, Buffer.alloc(4096, 1));
        expect(upload.status, `upload to ${id}`).toBe(404);
        expect(upload.body.error.code).toBe('TEMPLATE_NOT_FOUND');
        const fromPath = await t.json('POST', `/api/v1/templates/${id}/versions`, { sourcePath: '/etc/hostname', format: 'raw' });
        expect(fromPath.status).toBe(404);
        expect(fromPath.body.error.code).toBe('TEMPLATE_NOT_FOUND');
      }
    });

    it('deletes a template with 204; it is gone from the list and by id, and a second delete is 404', async () => {
      const template = await createTemplate(t);
      const res = await t.api(`/api/v1/templates/${template.id}`, { method: 'DELETE' });
      expect(res.status).toBe(204);
      expect((await t.json('GET', `/api/v1/templates/${template.id}`)).status).toBe(404);
      expect((await t.json('GET', '/api/v1/templates')).body.map((x: any) => x.id)).not.toContain(template.id);
      const again = await t.json('DELETE', `/api/v1/templates/${template.id}`);
      expect(again.status).toBe(404);
      expect(again.body.error.code).toBe('TEMPLATE_NOT_FOUND');
      // The name can be used again.
      expect((await t.json('POST', '/api/v1/templates', { name: template.name })).status).toBe(201);
    });
  });

  describe('versions', () => {
    it('stores a raw upload with sizeBytes rounded up to 4096 and the sha256 of the padded image', async () => {
      const template = await createTemplate(t);
      const image = halfZeroImage(1024 * 1024 + 1000);
      const { status, body } = await uploadVersion(t, template.id, image);
      expect(status).toBe(201);
      const expectedSize = roundUp4k(image.length);
      expect(expectedSize).toBe(1024 * 1024 + 4096);
      expect(body).toMatchObject({ templateId: template.id, version: 1, sizeBytes: expectedSize, sha256: paddedSha256(image), format: 'raw' });
      expect(body.sha256).not.toBe(sha256(image));
      expect(body.id).toMatch(/^[0-9a-f-]{36}$/);

      const file = path.join(templateDir(template.id), `${body.id}.img`);
      const onDisk = await readFile(file);
      expect(onDisk.length).toBe(expectedSize);
      expect(onDisk.subarray(0, image.length).equals(image)).toBe(true);
      expect(onDisk.subarray(image.length).every((b) => b === 0)).toBe(true);
      expect(await listFilesRecursive(templateDir(template.id))).toEqual([`${body.id}.img`]);

      const template2 = (await t.json('GET', `/api/v1/templates/${template.id}`)).body;
      expect(template2).toMatchObject({ versionCount: 1, latestVersion: 1 });
      expect(template2.versions).toEqual([expect.objectContaining({ id: body.id, version: 1, sizeBytes: expectedSize, sha256: body.sha256, format: 'raw' })]);
    });

    it('treats ?format=raw and a missing Content-Type like the default raw upload', async () => {
      const template = await createTemplate(t);
      const image = halfZeroImage(8192);
      const explicit = await uploadVersion(t, template.id, image, { format: 'raw' });
      expect(explicit.status).toBe(201);
      expect(explicit.body).toMatchObject({ format: 'raw', sizeBytes: 8192, sha256: sha256(image) });
      const noType = await uploadVersion(t, template.id, image, { contentType: null });
      // fetch labels a Buffer body without a type; the server sees no Content-Type and takes it as raw bytes.
      expect(noType.status).toBe(201);
      expect(noType.body).toMatchObject({ format: 'raw', version: 2, sha256: sha256(image) });
    });

    it('streams a chunked upload of a file from disk (no Content-Length)', async () => {
      const dir = await temp.make();
      const image = halfZeroImage(6 * 1024 * 1024 + 123);
      const file = path.join(dir, 'disk.raw');
      await writeFileBytes(file, image);
      const template = await createTemplate(t);
      const { status, body } = await uploadVersion(t, template.id, file);
      expect(status).toBe(201);
      expect(body).toMatchObject({ sizeBytes: roundUp4k(image.length), sha256: paddedSha256(image), format: 'raw' });
    });

    it.each(CONVERTED_FORMATS)('converts a %s upload to raw: same sizeBytes and sha256 as the padded raw image', async (format) => {
      const dir = await temp.make();
      const image = halfZeroImage(2 * 1024 * 1024 + 1000);
      const rawFile = path.join(dir, 'disk.raw');
      const converted = path.join(dir, `disk.${format}`);
      await writeFileBytes(rawFile, image);
      await qemuImgConvert(rawFile, format, converted);
      // The converted file really is another format, not raw bytes.
      expect((await readFile(converted)).equals(image)).toBe(false);

      const template = await createTemplate(t);
      const { status, body } = await uploadVersion(t, template.id, converted, { format });
      expect(status, JSON.stringify(body)).toBe(201);
      expect(body).toMatchObject({ templateId: template.id, version: 1, format, sizeBytes: roundUp4k(image.length), sha256: paddedSha256(image) });
      const stored = path.join(templateDir(template.id), `${body.id}.img`);
      expect(await sha256File(stored)).toBe(paddedSha256(image));
      expect(await listFilesRecursive(templateDir(template.id))).toEqual([`${body.id}.img`]);
    });

    it('adds versions from a file on the appliance with JSON {sourcePath, format}', async () => {
      const dir = await temp.make();
      const image = halfZeroImage(512 * 1024 + 17);
      const rawFile = path.join(dir, 'disk.raw');
      const qcow2File = path.join(dir, 'disk.qcow2');
      await writeFileBytes(rawFile, image);
      await qemuImgConvert(rawFile, 'qcow2', qcow2File);
      const template = await createTemplate(t);

      const raw = await t.json('POST', `/api/v1/templates/${template.id}/versions`, { sourcePath: rawFile, format: 'raw' });
      expect(raw.status).toBe(201);
      expect(raw.body).toMatchObject({ version: 1, format: 'raw', sizeBytes: roundUp4k(image.length), sha256: paddedSha256(image) });
      const defaultFormat = await t.json('POST', `/api/v1/templates/${template.id}/versions`, { sourcePath: rawFile });
      expect(defaultFormat.status).toBe(201);
      expect(defaultFormat.body).toMatchObject({ version: 2, format: 'raw', sha256: paddedSha256(image) });
      const qcow2 = await t.json('POST', `/api/v1/templates/${template.id}/versions`, { sourcePath: qcow2File, format: 'qcow2' });
      expect(qcow2.status).toBe(201);
      expect(qcow2.body).toMatchObject({ version: 3, format: 'qcow2', sizeBytes: roundUp4k(image.length), sha256: paddedSha256(image) });

      // The sources are left as they were.
      expect((await readFile(rawFile)).equals(image)).toBe(true);
      expect(await exists(qcow2File)).toBe(true);
      expect(await listFilesRecursive(templateDir(template.id))).toEqual([raw.body.id, defaultFormat.body.id, qcow2.body.id].map((id) => `${id}.img`).sort());
    });

    it('rejects unusable sourcePath values with 400 naming sourcePath', async () => {
      const dir = await temp.make();
      const template = await createTemplate(t);
      const cases: Array<[unknown, RegExp]> = [
        [{ sourcePath: 'relative/disk.raw', format: 'raw' }, /absolute/],
        [{ sourcePath: path.join(dir, 'missing.raw'), format: 'raw' }, /ENOENT/],
        [{ sourcePath: dir, format: 'raw' }, /not a regular file/],
        [{ sourcePath: '', format: 'raw' }, /sourcePath/],
        [{ sourcePath: 12, format: 'raw' }, /sourcePath/],
        [{ format: 'raw' }, /sourcePath/],
      ];
      for (const [input, message] of cases) {
        const { status, body } = await t.json('POST', `/api/v1/templates/${template.id}/versions`, input);
        expect(status, JSON.stringify(input)).toBe(400);
        expect(body.error.code).toBe('VALIDATION_FAILED');
        expect(body.error.message).toMatch(message);
        expect(body.error.message).toContain('sourcePath');
      }
      const badFormat = await t.json('POST', `/api/v1/templates/${template.id}/versions`, { sourcePath: '/etc/hostname', format: 'iso' });
      expect(badFormat.status).toBe(400);
      expect(badFormat.body.error.details.map((d: any) => d.field)).toContain('format');
      const unknown = await t.json('POST', `/api/v1/templates/${template.id}/versions`, { sourcePath: '/etc/hostname', format: 'raw', checksum: 'x' });
      expect(unknown.status).toBe(400);
      expect(unknown.body.error.message).toMatch(/checksum/);
      expect(await versionsOf(template.id)).toEqual([]);
    });

    it('numbers versions 1, 2, 3 in upload order', async () => {
      const template = await createTemplate(t);
      const images = [halfZeroImage(4096), halfZeroImage(8192), halfZeroImage(12288)];
      const uploaded = [];
      for (const image of images) {
        const { status, body } = await uploadVersion(t, template.id, image);
        expect(status).toBe(201);
        uploaded.push(body);
      }
      expect(uploaded.map((v) => v.version)).toEqual([1, 2, 3]);
      expect(new Set(uploaded.map((v) => v.id)).size).toBe(3);
      const got = (await t.json('GET', `/api/v1/templates/${template.id}`)).body;
      expect(got).toMatchObject({ versionCount: 3, latestVersion: 3 });
      expect(got.versions.map((v: any) => [v.version, v.sha256, v.sizeBytes])).toEqual(images.map((img, i) => [i + 1, sha256(img), img.length]));
      const listed = (await t.json('GET', '/api/v1/templates')).body.find((x: any) => x.id === template.id);
      expect(listed).toMatchObject({ versionCount: 3, latestVersion: 3 });
    });

    it('gives concurrent uploads distinct, consecutive version numbers', async () => {
      const template = await createTemplate(t);
      const results = await Promise.all([1, 2, 3, 4].map(() => uploadVersion(t, template.id, halfZeroImage(64 * 1024))));
      for (const r of results) expect(r.status).toBe(201);
      expect(results.map((r) => r.body.version).sort()).toEqual([1, 2, 3, 4]);
    });

    it('rejects a qcow2 whose virtual size exceeds THICKET_MAX_IMAGE_BYTES with 422 IMAGE_TOO_LARGE before converting', async () => {
      const dir = await temp.make();
      const file = path.join(dir, 'huge.qcow2');
      // A few hundred KiB on disk that declare 3 TiB.
      await new Promise<void>((resolve, reject) => {
        execFile('qemu-img', ['create', '-q', '-f', 'qcow2', file, '3T'], (err) => (err ? reject(err) : resolve()));
      });
      const template = await createTemplate(t);
      for (const attempt of [() => uploadVersion(t, template.id, file, { format: 'qcow2' }), () => t.json('POST', `/api/v1/templates/${template.id}/versions`, { sourcePath: file, format: 'qcow2' })]) {
        const { status, body } = await attempt();
        expect(status).toBe(422);
        expect(body.error.code).toBe('IMAGE_TOO_LARGE');
        expect(body.error.details).toMatchObject({ virtualSizeBytes: 3 * 1024 ** 4, maxImageBytes: 2 * 1024 ** 4 });
        expect(body.error.message).toContain('THICKET_MAX_IMAGE_BYTES');
      }
      expect(await listFilesRecursive(templateDir(template.id))).toEqual([]);
      expect(await versionsOf(template.id)).toEqual([]);
    });

    it.each([
      ['random bytes', async (dir: string) => {
        const file = path.join(dir, 'random.qcow2');
        await writeFileBytes(file, halfZeroImage(256 * 1024));
        return file;
      }],
      ['a truncated header', async (dir: string) => {
        const raw = path.join(dir, 'disk.raw');
        const file = path.join(dir, 'truncated.qcow2');
        await writeFileBytes(raw, halfZeroImage(256 * 1024));
        await qemuImgConvert(raw, 'qcow2', file);
        await truncate(file, 40);
        return file;
      }],
      ['an image cut in half (its header is intact; only qemu-img check notices)', async (dir: string) => {
        const raw = path.join(dir, 'disk.raw');
        const file = path.join(dir, 'half.qcow2');
        await writeFileBytes(raw, randomBytes(4 * 1024 * 1024));
        await qemuImgConvert(raw, 'qcow2', file);
        const { size } = await stat(file);
        await truncate(file, Math.floor(size / 2));
        return file;
      }],
    ])('rejects a qcow2 upload of %s with 422 IMAGE_INVALID and leaves no file and no version behind', async (_label, make) => {
      const dir = await temp.make();
      const bad = await make(dir);
      const template = await createTemplate(t);
      const { status, body } = await uploadVersion(t, template.id, bad, { format: 'qcow2' });
      expect(status).toBe(422);
      expect(body.error.code).toBe('IMAGE_INVALID');
      // The converter's own words reach the client.
      expect(typeof body.error.details.converter).toBe('string');
      expect(body.error.details.converter.length).toBeGreaterThan(0);
      expect(body.error.message).toContain(body.error.details.converter);
      expect(body.error.message).toMatch(/qcow2/);
      // The server's temporary file is no business of the client's.
      expect(body.error.message).not.toContain(t.dataDir);
      expect(await listFilesRecursive(templateDir(template.id))).toEqual([]);
      expect(await versionsOf(template.id)).toEqual([]);
      // The template still accepts a good version, numbered 1.
      const good = await uploadVersion(t, template.id, halfZeroImage(4096));
      expect(good.status).toBe(201);
      expect(good.body.version).toBe(1);
    });

    it('rejects a corrupt image named by sourcePath with 422 and keeps the source file', async () => {
      const dir = await temp.make();
      const bad = path.join(dir, 'bad.vmdk');
      const content = halfZeroImage(64 * 1024);
      await writeFileBytes(bad, content);
      const template = await createTemplate(t);
      const { status, body } = await t.json('POST', `/api/v1/templates/${template.id}/versions`, { sourcePath: bad, format: 'vmdk' });
      expect(status).toBe(422);
      expect(body.error.code).toBe('IMAGE_INVALID');
      expect(body.error.message).toContain(body.error.details.converter);
      expect(await listFilesRecursive(templateDir(template.id))).toEqual([]);
      expect(await versionsOf(template.id)).toEqual([]);
      expect((await readFile(bad)).equals(content)).toBe(true);
    });

    describe('images that name other files', () => {
      const SECRET = Buffer.alloc(4096);
      SECRET.write('THICKET-TEST-SECRET host file contents that must never reach a template');

      /** Each maker returns an image that, converted naively, would copy `secretFile` into the template. */
      const makers: Array<[string, string, (dir: string, secretFile: string) => Promise<string>]> = [
        ['a qcow2 with a backing file', 'qcow2', async (dir, secretFile) => {
          const file = path.join(dir, 'backed.qcow2');
          await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', secretFile, '-F', 'raw', file, '4096']);
          return file;
        }],
        ['a qcow2 with an external data file', 'qcow2', async (dir, secretFile) => {
          const file = path.join(dir, 'external.qcow2');
          const dataFile = path.join(dir, 'external-data.raw');
          await execFileAsync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${dataFile},data_file_raw=on`, file, '4096']);
          // qemu-img create zeroes the data file; put the secret there afterwards.
          await writeFile(dataFile, await readFile(secretFile));
          return file;
        }],
        ['a VMDK descriptor with a flat extent', 'vmdk', async (dir, secretFile) => {
          const file = path.join(dir, 'descriptor.vmdk');
          await writeFile(
            file,
            ['# Disk DescriptorFile', 'version=1', 'CID=fffffffe', 'parentCID=ffffffff', 'createType="monolithicFlat"', '', `RW 8 FLAT "${secretFile}" 0`, '', 'ddb.adapterType = "ide"', ''].join('\n'),
          );
          return file;
        }],
      ];

      it.each(makers)('rejects %s with 422 and copies nothing (upload and sourcePath)', async (_label, format, make) => {
        const dir = await temp.make();
        const secretFile = path.join(dir, 'host-secret.raw');
        await writeFile(secretFile, SECRET);
        const image = await make(dir, secretFile);
        // The image really does pull in the secret when converted without care.
        const naive = path.join(dir, 'naive.raw');
        await execFileAsync('qemu-img', ['convert', '-q', '-f', format, '-O', 'raw', image, naive]);
        expect((await readFile(naive)).subarray(0, 20).equals(SECRET.subarray(0, 20))).toBe(true);

        const template = await createTemplate(t);
        const uploaded = await uploadVersion(t, template.id, image, { format });
        expect(uploaded.status, JSON.stringify(uploaded.body)).toBe(422);
        expect(uploaded.body.error.code).toBe('IMAGE_INVALID');
        expect(uploaded.body.error.message).toMatch(/self-contained|other files/);
        const fromPath = await t.json('POST', `/api/v1/templates/${template.id}/versions`, { sourcePath: image, format });
        expect(fromPath.status, JSON.stringify(fromPath.body)).toBe(422);
        expect(fromPath.body.error.code).toBe('IMAGE_INVALID');
        expect(await listFilesRecursive(templateDir(template.id))).toEqual([]);
        expect(await versionsOf(template.id)).toEqual([]);
        expect(await readFile(secretFile)).toEqual(SECRET);
      });
    });

    it('answers 507 INSUFFICIENT_SPACE when the template directory fills up, in every import path, leaving nothing behind', async (ctx) => {
      const dir = await temp.make();
      const image = randomImage(16 * 1024 * 1024);
      const rawFile = path.join(dir, 'disk.raw');
      const qcow2File = path.join(dir, 'disk.qcow2');
      await writeFileBytes(rawFile, image);
      await qemuImgConvert(rawFile, 'qcow2', qcow2File);
      const template = await createTemplate(t);
      await mkdir(templateDir(template.id), { recursive: true });
      // A 1 MiB file system under this template's directory: the 16 MiB image cannot fit, and the server
      // fails while the client is still sending.
      const small = await mountSmallTmpfs(templateDir(template.id), 1024 * 1024);
      if (!small) ctx.skip();
      try {
        const attempts: Array<[string, () => Promise<{ status: number; body: any }>]> = [
          ['raw upload', () => uploadVersion(t, template.id, rawFile)],
          ['qcow2 upload', () => uploadVersion(t, template.id, qcow2File, { format: 'qcow2' })],
          ['raw sourcePath', () => t.json('POST', `/api/v1/templates/${template.id}/versions`, { sourcePath: rawFile, format: 'raw' })],
          ['qcow2 sourcePath', () => t.json('POST', `/api/v1/templates/${template.id}/versions`, { sourcePath: qcow2File, format: 'qcow2' })],
        ];
        for (const [label, attempt] of attempts) {
          const { status, body } = await attempt();
          expect(status, `${label}: ${JSON.stringify(body)}`).toBe(507);
          expect(body.error.code, label).toBe('INSUFFICIENT_SPACE');
          expect(await listFilesRecursive(templateDir(template.id)), label).toEqual([]);
        }
        expect(await versionsOf(template.id)).toEqual([]);
      } finally {
        await small!.release();
      }
      // With room again the same image is accepted.
      const ok = await uploadVersion(t, template.id, rawFile);
      expect(ok.status).toBe(201);
      expect(ok.body).toMatchObject({ version: 1, sha256: sha256(image) });
    }, 120_000);

    it('rejects an unknown ?format with 400 naming format', async () => {
      const template = await createTemplate(t);
      for (const format of ['iso', 'QCOW2', '', 'raw,qcow2']) {
        const { status, body } = await uploadVersion(t, template.id, halfZeroImage(4096), { format });
        expect(status, format).toBe(400);
        expect(body.error.code).toBe('VALIDATION_FAILED');
        expect(body.error.details.map((d: any) => d.field)).toContain('format');
      }
      expect(await versionsOf(template.id)).toEqual([]);
      expect(await listFilesRecursive(templateDir(template.id))).toEqual([]);
    });

    it('rejects an empty body with 422 IMAGE_INVALID, in raw and in a converted format', async () => {
      const dir = await temp.make();
      const emptyFile = path.join(dir, 'empty.raw');
      await writeFile(emptyFile, '');
      const template = await createTemplate(t);
      for (const format of ['raw', 'qcow2', undefined]) {
        const { status, body } = await uploadVersion(t, template.id, Buffer.alloc(0), { format });
        expect(status, String(format)).toBe(422);
        expect(body.error.code).toBe('IMAGE_INVALID');
      }
      const fromPath = await t.json('POST', `/api/v1/templates/${template.id}/versions`, { sourcePath: emptyFile, format: 'raw' });
      expect(fromPath.status).toBe(422);
      expect(fromPath.body.error.code).toBe('IMAGE_INVALID');
      expect(await versionsOf(template.id)).toEqual([]);
      expect(await listFilesRecursive(templateDir(template.id))).toEqual([]);
    });

    it('rejects a body with another Content-Type with 415', async () => {
      const template = await createTemplate(t);
      for (const contentType of ['text/plain', 'multipart/form-data; boundary=x', 'application/x-qcow2']) {
        const { status, body } = await uploadVersion(t, template.id, halfZeroImage(4096), { contentType });
        expect(status, contentType).toBe(415);
        expect(body.error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
      }
      expect(await versionsOf(template.id)).toEqual([]);
    });

    it('asks the client not to reuse the connection after refusing an upload whose body it may not have read', async () => {
      const template = await createTemplate(t);
      for (const [query, contentType, expected] of [
        ['?format=qcow2', 'application/octet-stream', 422],
        ['?format=iso', 'application/octet-stream', 400],
        ['', 'text/plain', 415],
      ] as const) {
        const res = await t.api(`/api/v1/templates/${template.id}/versions${query}`, { method: 'POST', headers: { 'content-type': contentType }, body: halfZeroImage(64 * 1024) });
        expect(res.status).toBe(expected);
        expect(res.headers.get('connection')).toBe('close');
        await res.text();
      }
      // A successful upload keeps the connection.
      const ok = await t.api(`/api/v1/templates/${template.id}/versions`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: halfZeroImage(8192) });
      expect(ok.status).toBe(201);
      expect(ok.headers.get('connection')).not.toBe('close');
      await ok.text();
    });

    it('rejects malformed JSON on the versions endpoint with 400 INVALID_JSON', async () => {
      const template = await createTemplate(t);
      const res = await t.json('POST', `/api/v1/templates/${template.id}/versions`, '{"sourcePath": ');
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe('INVALID_JSON');
    });

    /**
     * Starts an upload whose body sends `first`, then waits for `release()` before sending `rest`. Resolves
     * `started` once the server has opened its incoming file for it.
     */
    async function startGatedUpload(templateId: string, first: Buffer, rest: Buffer, format = 'raw') {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const abort = new AbortController();
      let step = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          step += 1;
          if (step === 1) controller.enqueue(first);
          else if (step === 2) {
            await gate;
            controller.enqueue(rest);
          } else controller.close();
        },
      });
      const response = t
        .api(`/api/v1/templates/${templateId}/versions?format=${format}`, {
          method: 'POST',
          headers: { 'content-type': 'application/octet-stream' },
          body,
          signal: abort.signal,
          duplex: 'half',
        } as RequestInit)
        .then(async (res) => ({ status: res.status, body: await res.json().catch(() => undefined) }));
      response.catch(() => {});
      await pollUntil(async () => (await listFilesRecursive(templateDir(templateId))).some((f) => f.startsWith('.incoming-')), {
        what: 'the server to open its incoming file',
      });
      return { response, release, abort };
    }

    it('answers 404 to an upload whose template is deleted meanwhile, and leaves no file behind', async () => {
      for (const format of ['raw', 'qcow2']) {
        const template = await createTemplate(t);
        const upload = await startGatedUpload(template.id, halfZeroImage(1024 * 1024), halfZeroImage(1024 * 1024), format);
        expect((await t.api(`/api/v1/templates/${template.id}`, { method: 'DELETE' })).status).toBe(204);
        upload.release();
        const { status, body } = await upload.response;
        expect(status, `${format}: ${JSON.stringify(body)}`).toBe(404);
        expect(body.error.code).toBe('TEMPLATE_NOT_FOUND');
        expect(await exists(templateDir(template.id))).toBe(false);
        expect((await t.json('GET', `/api/v1/templates/${template.id}`)).status).toBe(404);
      }
    });

    it('answers 507 to an upload that fills the disk while the client is still sending slowly', async (ctx) => {
      const template = await createTemplate(t);
      await mkdir(templateDir(template.id), { recursive: true });
      const small = await mountSmallTmpfs(templateDir(template.id), 1024 * 1024);
      if (!small) ctx.skip();
      try {
        // 5 MiB arrive at once (the server fails writing them), the last MiB only 1.5 s later.
        const upload = await startGatedUpload(template.id, randomImage(5 * 1024 * 1024), randomImage(1024 * 1024));
        await new Promise((r) => setTimeout(r, 1500));
        upload.release();
        const { status, body } = await upload.response;
        expect(status, JSON.stringify(body)).toBe(507);
        expect(body.error.code).toBe('INSUFFICIENT_SPACE');
        expect(await listFilesRecursive(templateDir(template.id))).toEqual([]);
      } finally {
        await small!.release();
      }
      expect(await versionsOf(template.id)).toEqual([]);
    }, 120_000);

    it('removes the incoming file when the client aborts an upload', async () => {
      const template = await createTemplate(t);
      const upload = await startGatedUpload(template.id, halfZeroImage(5 * 1024 * 1024), halfZeroImage(1024 * 1024));
      upload.abort.abort();
      await expect(upload.response).rejects.toThrow();
      await pollUntil(async () => (await listFilesRecursive(templateDir(template.id))).length === 0, { what: 'incoming file removed' });
      expect(await versionsOf(template.id)).toEqual([]);
      // The server is fine and the template still takes versions.
      expect((await uploadVersion(t, template.id, halfZeroImage(4096))).body.version).toBe(1);
    });

    it('deletes a template\'s version files under the data directory with the template', async () => {
      const template = await createTemplate(t);
      for (let i = 0; i < 2; i++) expect((await uploadVersion(t, template.id, halfZeroImage(8192))).status).toBe(201);
      expect(await listFilesRecursive(templateDir(template.id))).toHaveLength(2);
      expect((await t.api(`/api/v1/templates/${template.id}`, { method: 'DELETE' })).status).toBe(204);
      expect(await exists(templateDir(template.id))).toBe(false);
    });
  });

  it('deleting a template removes its files but leaves an existing replica ready, unchanged and verifiable', async () => {
    const { fast } = await defaultPools(t);
    const template = await createTemplate(t);
    const image = halfZeroImage(1024 * 1024 + 5);
    const version = (await uploadVersion(t, template.id, image)).body;
    const { job, replica } = await promoteAndWait(t, version.id, fast.id);
    expect(job.state).toBe('succeeded');
    expect(replica.state).toBe('ready');
    const file = replicaFile(fast.path, replica.id);
    const before = await stat(file);

    const del = await t.api(`/api/v1/templates/${template.id}`, { method: 'DELETE' });
    expect(del.status).toBe(204);
    expect(await exists(templateDir(template.id))).toBe(false);
    expect(await listFilesRecursive(path.join(t.dataDir, 'templates'))).not.toContainEqual(expect.stringContaining(template.id));

    const after = (await t.json('GET', `/api/v1/replicas/${replica.id}`)).body;
    expect(after).toMatchObject({ id: replica.id, state: 'ready', sha256: paddedSha256(image), sizeBytes: roundUp4k(image.length), templateVersionId: version.id });
    const afterStat = await stat(file);
    expect(afterStat.ino).toBe(before.ino);
    expect(afterStat.mtimeMs).toBe(before.mtimeMs);
    expect(afterStat.mode & 0o777).toBe(0o444);
    expect(await sha256File(file)).toBe(paddedSha256(image));

    const verify = await t.json('POST', `/api/v1/replicas/${replica.id}/verify`);
    expect(verify.status).toBe(202);
    const verified = await t.waitForJob(verify.body.job.id);
    expect(verified.state).toBe('succeeded');
    expect((await t.json('GET', `/api/v1/replicas/${replica.id}`)).body.state).toBe('ready');

    // The deleted version can no longer be promoted.
    const again = await t.json('POST', '/api/v1/replicas', { templateVersionId: version.id, storagePoolId: fast.id });
    expect(again.status).toBe(404);
    expect(again.body.error.code).toBe('TEMPLATE_VERSION_NOT_FOUND');
  });
});
