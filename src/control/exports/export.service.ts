// Hosts, subsystems and namespaces: which clone is served to which host under which NQN. Rows are the
// truth; the target in the data plane is told of every change and rebuilt from the rows at start-up.
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import ssh2 from 'ssh2';
import type { Kysely } from 'kysely';
import type { DataplaneClient } from '../../dataplane/client.ts';
import type { Database, HookType, HostRow, NamespaceRow, SubsystemRow } from '../../db/schema.ts';
import type { HookRunner, ProbeReport } from '../../hooks/hook-runner.ts';
import type { SecretBox } from '../../hooks/secret-box.ts';
import { HostKeyError, SshConnectError, SshKeyUnreadableError } from '../../hooks/ssh-session.ts';
import { CloneRepository } from '../../db/repositories/clone.repository.ts';
import { isUniqueViolation } from '../../db/repositories/executor.ts';
import { HostRepository, SubsystemRepository } from '../../db/repositories/export.repository.ts';
import { nguidFor } from '../../nvmeof/target/target.ts';
import { AppError } from '../../errors.ts';
import type { EventBus } from '../events/event-bus.ts';
import { nqnProblem } from './nqn.ts';
import type { HostDto } from '../../dto.ts';
export type { HostDto } from '../../dto.ts';

export const MAX_NAMESPACES_PER_SUBSYSTEM = 1024;


export interface CreateHostInput {
  name: string;
  nqn: string;
  ssh?: { address: string; port?: number; username: string; privateKey?: string; privateKeyPath?: string };
  hookType?: HookType;
  maxDesktops?: number | null;
}

/** PATCH of a host: absent fields stay; `ssh: null` makes it a plain NVMe host again. */
export interface UpdateHostInput {
  name?: string;
  nqn?: string;
  ssh?: CreateHostInput['ssh'] | null;
  hookType?: HookType;
  maxDesktops?: number | null;
}

export interface NamespaceDto {
  nsid: number;
  cloneId: string;
  uuid: string;
  nguid: string;
  hostIds: string[] | null;
}

export interface SubsystemDto {
  id: string;
  name: string;
  nqn: string;
  createdAt: string;
  hosts?: HostDto[];
  namespaces?: NamespaceDto[];
}

const iso = (d: Date | string) => new Date(d).toISOString();

function hostDto(h: HostRow): HostDto {
  return {
    id: h.id,
    name: h.name,
    nqn: h.nqn,
    ssh: h.ssh_address
      ? { address: h.ssh_address, port: h.ssh_port!, username: h.ssh_username!, privateKey: h.ssh_private_key_enc ? 'stored' : null, privateKeyPath: h.ssh_private_key_path }
      : null,
    hookType: h.hook_type,
    hostKeyFingerprint: h.host_key_fingerprint,
    maxDesktops: h.max_desktops,
    createdAt: iso(h.created_at),
  };
}

/** A private key ssh2 can sign with (OpenSSH or PEM, not passphrase-protected). */
function privateKeyProblem(text: string): string | undefined {
  const parsed = ssh2.utils.parseKey(text);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (key instanceof Error) return key.message;
  if (!key || !key.isPrivateKey()) return 'is a public key, not a private key';
  return undefined;
}

function namespaceDto(n: NamespaceRow): NamespaceDto {
  return { nsid: n.nsid, cloneId: n.clone_id, uuid: n.uuid, nguid: n.nguid, hostIds: n.visible_host_ids };
}

function subsystemDto(s: SubsystemRow): SubsystemDto {
  return { id: s.id, name: s.name, nqn: s.nqn, createdAt: iso(s.created_at) };
}

export class ExportService {
  #db: Kysely<Database>;
  #events: EventBus;
  #dataplane: DataplaneClient;
  #nqnPrefix: string;
  #hosts = new HostRepository();
  #subsystems = new SubsystemRepository();
  #clones = new CloneRepository();
  #hooks: { secrets: SecretBox; runner: HookRunner } | undefined;

  constructor(db: Kysely<Database>, events: EventBus, dataplane: DataplaneClient, nqnPrefix: string) {
    this.#db = db;
    this.#events = events;
    this.#dataplane = dataplane;
    this.#nqnPrefix = nqnPrefix;
  }

  /** Enables hosts with SSH hooks (keys are encrypted with `secrets`, probes run through `runner`). */
  attachHooks(secrets: SecretBox, runner: HookRunner): void {
    this.#hooks = { secrets, runner };
  }

  // ---- hosts ----

  async listHosts(): Promise<HostDto[]> {
    return (await this.#hosts.list(this.#db)).map(hostDto);
  }

  async getHost(id: string): Promise<HostDto> {
    const h = await this.#hosts.get(this.#db, id);
    if (!h) throw new AppError('HOST_NOT_FOUND', `host ${id} does not exist`);
    return { ...hostDto(h), subsystems: await this.#hosts.subsystemsOf(this.#db, id) };
  }

  async createHost(input: CreateHostInput): Promise<HostDto> {
    const problem = nqnProblem(input.nqn);
    if (problem) throw new AppError('VALIDATION_FAILED', `nqn: ${problem}`, { field: 'nqn' });
    const ssh = await this.#sshColumns(input);
    try {
      const h = await this.#hosts.insert(this.#db, { id: randomUUID(), name: input.name, nqn: input.nqn, ...ssh, max_desktops: input.maxDesktops ?? null });
      this.#events.emit('host.created', { hostId: h.id, name: h.name, nqn: h.nqn });
      return hostDto(h);
    } catch (err) {
      if (isUniqueViolation(err)) throw new AppError('NAME_TAKEN', 'a host with that name or NQN already exists');
      throw err;
    }
  }

  /**
   * Changes a host. What hooks already did on it must stay undoable: while desktops are placed on it,
   * its SSH settings may change but not go away, and its hook type stays. Its NQN changes only while no
   * subsystem allows it (the target knows hosts by NQN). New SSH settings for another address or port
   * drop the pinned host key: that may be another machine, to be tested and trusted again.
   */
  async updateHost(id: string, input: UpdateHostInput): Promise<HostDto> {
    if (input.nqn !== undefined) {
      const problem = nqnProblem(input.nqn);
      if (problem) throw new AppError('VALIDATION_FAILED', `nqn: ${problem}`, { field: 'nqn' });
    }
    const current = await this.#hosts.get(this.#db, id);
    if (!current) throw new AppError('HOST_NOT_FOUND', `host ${id} does not exist`);
    // Key material is read and checked before the transaction (a file read must not hold row locks).
    const hookType = input.hookType ?? current.hook_type ?? undefined;
    const ssh = input.ssh ? await this.#sshColumns({ name: current.name, nqn: current.nqn, ssh: input.ssh, hookType }) : undefined;
    if (input.ssh === undefined && input.hookType !== undefined && !current.ssh_address) {
      throw new AppError('VALIDATION_FAILED', 'hookType: needs ssh settings to run hooks', { field: 'hookType' });
    }
    let updated: HostRow;
    try {
      updated = await this.#db.transaction().execute(async (trx) => {
        const h = await this.#hosts.get(trx, id);
        if (!h) throw new AppError('HOST_NOT_FOUND', `host ${id} does not exist`);
        const placed = (await this.#hosts.desktopCounts(trx, [id])).get(id) ?? 0;
        if (placed > 0 && input.ssh === null) {
          throw new AppError('HOST_IN_USE', `host "${h.name}" runs ${placed} desktop(s): its hooks must stay reachable to detach them; remove them first`, { desktops: placed });
        }
        const newHook = ssh ? ssh.hook_type : input.hookType;
        if (placed > 0 && newHook !== undefined && newHook !== h.hook_type) {
          throw new AppError('HOST_IN_USE', `host "${h.name}" runs ${placed} desktop(s) attached by its ${h.hook_type} hooks; remove them before changing the hook type`, { desktops: placed });
        }
        if (input.nqn !== undefined && input.nqn !== h.nqn) {
          const subs = await this.#hosts.subsystemsOf(trx, id);
          if (subs.length > 0) throw new AppError('HOST_IN_USE', `host "${h.name}" is allowed in ${subs.length} subsystem(s) by its NQN; disallow it first`, { subsystems: subs });
        }
        const set: Parameters<HostRepository['update']>[2] = {};
        if (input.name !== undefined) set.name = input.name;
        if (input.nqn !== undefined) set.nqn = input.nqn;
        if (input.maxDesktops !== undefined) set.max_desktops = input.maxDesktops;
        if (input.ssh === null) {
          Object.assign(set, { ssh_address: null, ssh_port: null, ssh_username: null, ssh_private_key_enc: null, ssh_private_key_path: null, hook_type: null, host_key_fingerprint: null });
        } else if (ssh) {
          Object.assign(set, ssh);
          if (ssh.ssh_address !== h.ssh_address || ssh.ssh_port !== h.ssh_port) set.host_key_fingerprint = null;
        } else if (input.hookType !== undefined) {
          set.hook_type = input.hookType;
        }
        if (Object.keys(set).length === 0) return h;
        return (await this.#hosts.update(trx, id, set))!;
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw new AppError('NAME_TAKEN', 'a host with that name or NQN already exists');
      throw err;
    }
    // A cached SSH connection was made with the old settings.
    this.#hooks?.runner.forget(id);
    this.#events.emit('host.updated', { hostId: id, name: updated.name, nqn: updated.nqn });
    return hostDto(updated);
  }

  async #sshColumns(input: CreateHostInput) {
    if (!input.ssh) {
      if (input.hookType) throw new AppError('VALIDATION_FAILED', 'hookType: needs ssh settings to run hooks', { field: 'hookType' });
      return {};
    }
    if (!this.#hooks) throw new AppError('VALIDATION_FAILED', 'ssh: hooks are not enabled on this node');
    const { ssh } = input;
    let enc: string | null = null;
    let keyPath: string | null = null;
    if (ssh.privateKey !== undefined) {
      const why = privateKeyProblem(ssh.privateKey);
      if (why) throw new AppError('VALIDATION_FAILED', `ssh.privateKey: not a usable private key (${why}; passphrase-protected keys are not supported)`, { field: 'ssh.privateKey' });
      enc = this.#hooks.secrets.encrypt(ssh.privateKey);
    } else {
      keyPath = ssh.privateKeyPath!;
      if (!path.isAbsolute(keyPath)) throw new AppError('VALIDATION_FAILED', 'ssh.privateKeyPath: must be an absolute path on the Thicket node', { field: 'ssh.privateKeyPath' });
      let text: string;
      try {
        text = await readFile(keyPath, 'utf8');
      } catch (err) {
        throw new AppError('VALIDATION_FAILED', `ssh.privateKeyPath: cannot read ${keyPath}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { field: 'ssh.privateKeyPath' });
      }
      const why = privateKeyProblem(text);
      if (why) throw new AppError('VALIDATION_FAILED', `ssh.privateKeyPath: ${keyPath} is not a usable private key (${why})`, { field: 'ssh.privateKeyPath' });
    }
    return {
      ssh_address: ssh.address,
      ssh_port: ssh.port ?? 22,
      ssh_username: ssh.username,
      ssh_private_key_enc: enc,
      ssh_private_key_path: keyPath,
      hook_type: input.hookType ?? 'linux-nvme',
    };
  }

  async #sshHost(id: string): Promise<HostRow> {
    const h = await this.#hosts.get(this.#db, id);
    if (!h) throw new AppError('HOST_NOT_FOUND', `host ${id} does not exist`);
    if (!h.ssh_address || !this.#hooks) throw new AppError('HOST_HAS_NO_SSH', `host "${h.name}" has no SSH settings; it is a plain NVMe host`);
    return h;
  }

  /** Logs in to the host and reports its key, NQN and tools (the key need not be pinned yet). */
  async testHost(id: string): Promise<ProbeReport> {
    const h = await this.#sshHost(id);
    try {
      return await this.#hooks!.runner.probe(h);
    } catch (err) {
      if (err instanceof HostKeyError) throw new AppError(err.code, err.message, { presented: err.presented, pinned: err.pinned });
      if (err instanceof SshKeyUnreadableError) throw new AppError('SSH_KEY_UNREADABLE', err.message, { field: 'ssh.privateKeyPath' });
      if (err instanceof SshConnectError) throw new AppError('HOST_UNREACHABLE', err.message);
      throw err;
    }
  }

  /** Pins the host key that hooks must see from now on. */
  async trustHost(id: string, fingerprint: string): Promise<HostDto> {
    await this.#sshHost(id);
    const h = (await this.#hosts.pinHostKey(this.#db, id, fingerprint))!;
    this.#hooks!.runner.forget(id);
    this.#events.emit('host.trusted', { hostId: id, fingerprint });
    return hostDto(h);
  }

  async deleteHost(id: string): Promise<void> {
    await this.#db.transaction().execute(async (trx) => {
      const h = await this.#hosts.get(trx, id);
      if (!h) throw new AppError('HOST_NOT_FOUND', `host ${id} does not exist`);
      const placed = (await this.#hosts.desktopCounts(trx, [id])).get(id) ?? 0;
      if (placed > 0) throw new AppError('HOST_IN_USE', `host "${h.name}" runs ${placed} desktop(s); remove them first`, { desktops: placed });
      const subs = await this.#hosts.subsystemsOf(trx, id);
      if (subs.length > 0) {
        throw new AppError('HOST_IN_USE', `host "${h.name}" is allowed in ${subs.length} subsystem(s); disallow it first`, { subsystems: subs });
      }
      await this.#hosts.delete(trx, id);
    });
    this.#hooks?.runner.forget(id);
    this.#events.emit('host.deleted', { hostId: id });
  }

  // ---- subsystems ----

  nqnFor(name: string): string {
    return `${this.#nqnPrefix}:${name}`;
  }

  async listSubsystems(): Promise<SubsystemDto[]> {
    return (await this.#subsystems.list(this.#db)).map(subsystemDto);
  }

  async getSubsystem(id: string): Promise<SubsystemDto> {
    const s = await this.#subsystems.get(this.#db, id);
    if (!s) throw new AppError('SUBSYSTEM_NOT_FOUND', `subsystem ${id} does not exist`);
    const [hosts, namespaces] = await Promise.all([this.#subsystems.hosts(this.#db, id), this.#subsystems.namespaces(this.#db, id)]);
    return { ...subsystemDto(s), hosts: hosts.map(hostDto), namespaces: namespaces.map(namespaceDto) };
  }

  async createSubsystem(input: { name: string }): Promise<SubsystemDto> {
    const nqn = this.nqnFor(input.name);
    const problem = nqnProblem(nqn);
    if (problem) throw new AppError('VALIDATION_FAILED', `name: the NQN ${nqn} ${problem}`, { field: 'name' });
    const row = await this.#db
      .transaction()
      .execute(async (trx) => {
        const s = await this.#subsystems.insert(trx, { id: randomUUID(), name: input.name, nqn });
        await this.#dataplane.call('addSubsystem', { nqn });
        return s;
      })
      .catch((err) => {
        if (isUniqueViolation(err)) throw new AppError('NAME_TAKEN', `a subsystem named "${input.name}" already exists`, { field: 'name' });
        throw err;
      });
    this.#events.emit('subsystem.created', { subsystemId: row.id, nqn });
    return { ...subsystemDto(row), hosts: [], namespaces: [] };
  }

  async deleteSubsystem(id: string): Promise<void> {
    const row = await this.#subsystems.get(this.#db, id);
    if (!row) throw new AppError('SUBSYSTEM_NOT_FOUND', `subsystem ${id} does not exist`);
    await this.#subsystems.delete(this.#db, id);
    // Controllers of the subsystem are torn down; namespaces vanish with it.
    await this.#dataplane.call('removeSubsystem', { nqn: row.nqn });
    this.#events.emit('subsystem.deleted', { subsystemId: id, nqn: row.nqn });
  }

  async allowHost(subsystemId: string, hostId: string): Promise<SubsystemDto> {
    await this.#db.transaction().execute(async (trx) => {
      const s = await this.#subsystems.getForUpdate(trx, subsystemId);
      if (!s) throw new AppError('SUBSYSTEM_NOT_FOUND', `subsystem ${subsystemId} does not exist`);
      const h = await this.#hosts.get(trx, hostId);
      if (!h) throw new AppError('HOST_NOT_FOUND', `host ${hostId} does not exist`, { field: 'hostId' });
      await this.#subsystems.addHost(trx, subsystemId, hostId);
      await this.#pushHosts(trx, s);
    });
    this.#events.emit('subsystem.host.allowed', { subsystemId, hostId });
    return this.getSubsystem(subsystemId);
  }

  async disallowHost(subsystemId: string, hostId: string): Promise<void> {
    await this.#db.transaction().execute(async (trx) => {
      const s = await this.#subsystems.getForUpdate(trx, subsystemId);
      if (!s) throw new AppError('SUBSYSTEM_NOT_FOUND', `subsystem ${subsystemId} does not exist`);
      const removed = await this.#subsystems.removeHost(trx, subsystemId, hostId);
      if (!removed) throw new AppError('HOST_NOT_FOUND', `host ${hostId} is not allowed in this subsystem`);
      // Its controllers are disconnected by the target when the host leaves the allow-list.
      await this.#pushHosts(trx, s);
    });
    this.#events.emit('subsystem.host.disallowed', { subsystemId, hostId });
  }

  async #pushHosts(trx: Kysely<Database>, s: SubsystemRow): Promise<void> {
    const hosts = await this.#subsystems.hosts(trx, s.id);
    await this.#dataplane.call('setSubsystemHosts', { nqn: s.nqn, hosts: hosts.map((h) => h.nqn) });
  }

  // ---- namespaces ----

  async addNamespace(subsystemId: string, input: { cloneId: string; hostIds?: string[] }): Promise<NamespaceDto> {
    return (await this.addNamespaces(subsystemId, [input]))[0];
  }

  /** Exports many clones at once: one transaction, one data-plane call, one event per controller. */
  async addNamespaces(subsystemId: string, inputs: Array<{ cloneId: string; hostIds?: string[] }>): Promise<NamespaceDto[]> {
    const rows = await this.#db.transaction().execute(async (trx) => {
      const s = await this.#subsystems.getForUpdate(trx, subsystemId);
      if (!s) throw new AppError('SUBSYSTEM_NOT_FOUND', `subsystem ${subsystemId} does not exist`);
      const allowed = new Map((await this.#subsystems.hosts(trx, subsystemId)).map((h) => [h.id, h]));
      const used = new Set(await this.#subsystems.usedNsids(trx, subsystemId));
      const seen = new Set<string>();
      const rows: Array<{ subsystem_id: string; nsid: number; clone_id: string; uuid: string; nguid: string; visible_host_ids: string[] | null }> = [];
      let next = 1;
      for (const input of inputs) {
        if (seen.has(input.cloneId)) throw new AppError('CONFLICT', `clone ${input.cloneId} is listed twice`, { field: 'cloneId' });
        seen.add(input.cloneId);
        const clone = await this.#clones.get(trx, input.cloneId);
        if (!clone) throw new AppError('CLONE_NOT_FOUND', `clone ${input.cloneId} does not exist`, { field: 'cloneId' });
        const existing = await this.#subsystems.namespaceOfClone(trx, input.cloneId);
        if (existing) throw new AppError('CLONE_EXPORTED', `clone ${input.cloneId} is already exported (nsid ${existing.nsid})`, { subsystemId: existing.subsystem_id, nsid: existing.nsid });
        for (const h of input.hostIds ?? []) {
          if (!allowed.has(h)) throw new AppError('VALIDATION_FAILED', `hostIds: host ${h} is not allowed in this subsystem`, { field: 'hostIds' });
        }
        while (used.has(next)) next++;
        if (next > MAX_NAMESPACES_PER_SUBSYSTEM) throw new AppError('SUBSYSTEM_FULL', `subsystem ${s.name} already has ${MAX_NAMESPACES_PER_SUBSYSTEM} namespaces`);
        used.add(next);
        rows.push({
          subsystem_id: subsystemId,
          nsid: next,
          clone_id: input.cloneId,
          uuid: input.cloneId,
          nguid: nguidFor(input.cloneId).toString('hex'),
          visible_host_ids: input.hostIds && input.hostIds.length > 0 ? [...new Set(input.hostIds)] : null,
        });
      }
      await this.#subsystems.insertNamespaces(trx, rows);
      await this.#dataplane.call('addNamespaces', {
        nqn: s.nqn,
        namespaces: rows.map((r) => ({
          nsid: r.nsid,
          cloneId: r.clone_id,
          uuid: r.uuid,
          nguid: r.nguid,
          visibleTo: r.visible_host_ids ? r.visible_host_ids.map((id) => allowed.get(id)!.nqn) : null,
        })),
      });
      return rows;
    });
    this.#events.emit('namespace.added', { subsystemId, namespaces: rows.map((r) => ({ nsid: r.nsid, cloneId: r.clone_id })) });
    return rows.map((r) => ({ nsid: r.nsid, cloneId: r.clone_id, uuid: r.uuid, nguid: r.nguid, hostIds: r.visible_host_ids }));
  }

  async removeNamespace(subsystemId: string, nsid: number): Promise<void> {
    const s = await this.#subsystems.get(this.#db, subsystemId);
    if (!s) throw new AppError('SUBSYSTEM_NOT_FOUND', `subsystem ${subsystemId} does not exist`);
    const removed = await this.#subsystems.deleteNamespace(this.#db, subsystemId, nsid);
    if (!removed) throw new AppError('NAMESPACE_NOT_FOUND', `subsystem ${s.name} has no namespace ${nsid}`);
    await this.#dataplane.call('removeNamespace', { nqn: s.nqn, nsid });
    this.#events.emit('namespace.removed', { subsystemId, nsid, cloneId: removed.clone_id });
  }

  /** Where a clone is exported, if anywhere. */
  async exportOf(cloneId: string): Promise<{ subsystemId: string; nsid: number } | undefined> {
    const n = await this.#subsystems.namespaceOfClone(this.#db, cloneId);
    return n ? { subsystemId: n.subsystem_id, nsid: n.nsid } : undefined;
  }

  /** Rebuilds the target from the rows (start-up). */
  async restore(): Promise<{ subsystems: number; namespaces: number }> {
    const subs = await this.#subsystems.list(this.#db);
    const hostsBySub = new Map<string, string[]>();
    for (const r of await this.#subsystems.allSubsystemHosts(this.#db)) hostsBySub.set(r.subsystem_id, [...(hostsBySub.get(r.subsystem_id) ?? []), r.nqn]);
    const hostNqn = new Map((await this.#hosts.list(this.#db)).map((h) => [h.id, h.nqn]));
    const nsBySub = new Map<string, NamespaceRow[]>();
    for (const n of await this.#subsystems.allNamespaces(this.#db)) nsBySub.set(n.subsystem_id, [...(nsBySub.get(n.subsystem_id) ?? []), n]);
    const failedClones = new Set((await this.#db.selectFrom('clones').select('id').where('state', '=', 'failed').execute()).map((r) => r.id));
    let count = 0;
    for (const s of subs) {
      await this.#dataplane.call('addSubsystem', { nqn: s.nqn });
      await this.#dataplane.call('setSubsystemHosts', { nqn: s.nqn, hosts: hostsBySub.get(s.id) ?? [] });
      // A clone found damaged at recovery is never served.
      const list = (nsBySub.get(s.id) ?? []).filter((n) => !failedClones.has(n.clone_id));
      await this.#dataplane.call('addNamespaces', {
        nqn: s.nqn,
        namespaces: list.map((n) => ({
          nsid: n.nsid,
          cloneId: n.clone_id,
          uuid: n.uuid,
          nguid: n.nguid,
          visibleTo: n.visible_host_ids ? n.visible_host_ids.map((id) => hostNqn.get(id)).filter((x): x is string => !!x) : null,
        })),
      });
      count += list.length;
    }
    return { subsystems: subs.length, namespaces: count };
  }
}
