// `thicket`: the command-line front end. Everything it does goes through the public HTTP API, so a
// script can do the same. THICKET_URL and THICKET_TOKEN configure it.
import { parseArgs } from 'node:util';
import { ApiClient, ApiError } from './api-client.ts';
import { formatBytes, ProgressBar, table } from './output.ts';

interface Ctx {
  api: ApiClient;
  json: boolean;
  wait: boolean;
  out: (text: string) => void;
}

interface Command {
  usage: string;
  summary: string;
  options?: Record<string, { type: 'string' | 'boolean'; short?: string }>;
  run(ctx: Ctx, args: string[], opts: Record<string, string | boolean | undefined>): Promise<number>;
}

class UsageError extends Error {}

function need(args: string[], n: number, usage: string): void {
  if (args.length < n) throw new UsageError(`usage: thicket ${usage}`);
}

function print(ctx: Ctx, data: unknown, human: () => string): void {
  ctx.out(ctx.json ? JSON.stringify(data, null, 2) : human());
}

/** --ssh USER@ADDRESS[:PORT] with --key-path PATH, as the API's ssh object. */
function sshOption(o: Record<string, unknown>, usage: string): Record<string, unknown> {
  const m = /^([^@]+)@(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(String(o.ssh));
  if (!m || !o['key-path']) throw new UsageError(`usage: thicket ${usage}`);
  return { username: m[1], address: m[2], ...(m[3] ? { port: Number(m[3]) } : {}), privateKeyPath: String(o['key-path']) };
}

function kv(obj: Record<string, unknown>): string {
  return Object.entries(obj)
    .map(([k, v]) => `${k.padEnd(18)} ${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`)
    .join('\n');
}

/**
 * Runs a job to its end with a progress bar; the exit code says whether it succeeded. `extra` holds the
 * resources the request returned ({pool}, {replica}); after waiting, `refetch` reads them again so that
 * --json shows their state after the job, not the snapshot from before it (the snapshot stays if the
 * resource is gone, e.g. after a rolled-back create).
 */
async function followJob(ctx: Ctx, job: { id: string; kind: string }, extra?: Record<string, unknown>, refetch?: () => Promise<Record<string, unknown>>): Promise<number> {
  if (!ctx.wait) {
    print(ctx, { ...(extra ?? {}), job }, () => `queued job ${job.id} (${job.kind})`);
    return 0;
  }
  const bar = new ProgressBar(job.kind);
  const done = await ctx.api.waitForJob(job.id, (d, t, phase) => bar.update(d, t, phase));
  bar.end();
  let after = extra ?? {};
  if (refetch) after = await refetch().catch(() => after);
  const results: Array<{ item: string; status: string; error?: string }> = done.results ?? [];
  const failed = results.filter((r) => r.status === 'failed');
  const skipped = results.filter((r) => r.status === 'skipped').length;
  print(ctx, { ...after, job: done }, () => {
    const lines = [`job ${done.id} ${done.state}${done.error ? `: ${done.error.code}: ${done.error.message}` : ''}`];
    // A job can succeed while some of its items failed (e.g. desktops whose attach hook failed).
    if (failed.length) lines.push(`${failed.length} item(s) failed:`, ...failed.slice(0, 10).map((r) => `  ${r.item}: ${r.error ?? 'failed'}`), ...(failed.length > 10 ? [`  … and ${failed.length - 10} more (thicket jobs show ${done.id})`] : []));
    if (skipped) lines.push(`${skipped} item(s) skipped`);
    return lines.join('\n');
  });
  return done.state === 'succeeded' ? 0 : 1;
}

const SCHEDULE_OPTIONS: Command['options'] = {
  cron: { type: 'string' },
  action: { type: 'string' },
  'wave-size': { type: 'string' },
  'in-use': { type: 'string' },
  'wait-deadline': { type: 'string' },
  'max-failures': { type: 'string' },
  timezone: { type: 'string' },
  disabled: { type: 'boolean' },
};

/** The schedule fields given as options; numbers stay strings the API refuses if they are not numbers. */
function scheduleBody(o: Record<string, string | boolean | undefined>): Record<string, unknown> {
  const num = (v: string | boolean | undefined) => (v === undefined ? undefined : Number.isNaN(Number(v)) ? v : Number(v));
  const body: Record<string, unknown> = {
    cron: o.cron,
    timezone: o.timezone,
    action: o.action,
    waveSize: num(o['wave-size']),
    inUse: o['in-use'],
    waitDeadlineMinutes: num(o['wait-deadline']),
    maxFailuresPerWave: num(o['max-failures']),
  };
  for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
  return body;
}

const list = (cols: string[]) => (ctx: Ctx, rows: Array<Record<string, unknown>>) => print(ctx, rows, () => table(rows, cols));

const COMMANDS: Record<string, Command> = {
  'storage-pools list': { usage: 'storage-pools list', summary: 'list storage pools', async run(ctx) {
    const rows = await ctx.api.request('GET', '/api/v1/storage-pools');
    list(['id', 'name', 'tier', 'path', 'free', 'replicas', 'clones'])(ctx, ctx.json ? rows : rows.map((p: any) => ({ ...p, free: formatBytes(p.usage.freeBytes), replicas: p.replicaCount, clones: p.cloneCount })));
    return 0;
  } },
  'storage-pools create': { usage: 'storage-pools create NAME PATH TIER [--capacity BYTES]', summary: 'add a storage pool', options: { capacity: { type: 'string' } }, async run(ctx, a, o) {
    need(a, 3, this.usage);
    const p = await ctx.api.request('POST', '/api/v1/storage-pools', { name: a[0], path: a[1], tier: a[2], ...(o.capacity ? { capacityBytes: Number(o.capacity) } : {}) });
    print(ctx, p, () => `created storage pool ${p.name} (${p.id})`);
    return 0;
  } },
  'storage-pools show': { usage: 'storage-pools show ID', summary: 'one storage pool with usage', async run(ctx, a) {
    need(a, 1, this.usage);
    const p = await ctx.api.request('GET', `/api/v1/storage-pools/${a[0]}`);
    print(ctx, p, () => kv({ id: p.id, name: p.name, tier: p.tier, path: p.path, capacity: formatBytes(p.usage.capacityBytes), used: formatBytes(p.usage.usedBytes), free: formatBytes(p.usage.freeBytes), replicas: formatBytes(p.usage.replicaBytes), clones: formatBytes(p.usage.cloneBytes) }));
    return 0;
  } },
  'storage-pools delete': { usage: 'storage-pools delete ID', summary: 'remove an empty storage pool', async run(ctx, a) {
    need(a, 1, this.usage);
    await ctx.api.request('DELETE', `/api/v1/storage-pools/${a[0]}`);
    print(ctx, { deleted: a[0] }, () => `deleted storage pool ${a[0]}`);
    return 0;
  } },
  'templates list': { usage: 'templates list', summary: 'list templates', async run(ctx) {
    list(['id', 'name', 'versionCount', 'latestVersion', 'description'])(ctx, await ctx.api.request('GET', '/api/v1/templates'));
    return 0;
  } },
  'templates create': { usage: 'templates create NAME [--description TEXT]', summary: 'register a template', options: { description: { type: 'string' } }, async run(ctx, a, o) {
    need(a, 1, this.usage);
    const t = await ctx.api.request('POST', '/api/v1/templates', { name: a[0], ...(o.description ? { description: o.description } : {}) });
    print(ctx, t, () => `created template ${t.name} (${t.id})`);
    return 0;
  } },
  'templates show': { usage: 'templates show ID', summary: 'a template with its versions', async run(ctx, a) {
    need(a, 1, this.usage);
    const t = await ctx.api.request('GET', `/api/v1/templates/${a[0]}`);
    print(ctx, t, () => `${kv({ id: t.id, name: t.name, description: t.description })}\n\n${table(t.versions.map((v: any) => ({ ...v, size: formatBytes(v.sizeBytes) })), ['id', 'version', 'format', 'size', 'sha256'])}`);
    return 0;
  } },
  'templates delete': { usage: 'templates delete ID', summary: 'delete a template and its versions (replicas stay)', async run(ctx, a) {
    need(a, 1, this.usage);
    await ctx.api.request('DELETE', `/api/v1/templates/${a[0]}`);
    print(ctx, { deleted: a[0] }, () => `deleted template ${a[0]}`);
    return 0;
  } },
  'versions add': { usage: 'versions add TEMPLATE_ID FILE [--format raw|qcow2|vmdk|vhdx|vdi] [--on-appliance]', summary: 'upload an image as a new version (or register a file on the appliance)', options: { format: { type: 'string' }, 'on-appliance': { type: 'boolean' } }, async run(ctx, a, o) {
    need(a, 2, this.usage);
    const format = (o.format as string) ?? 'raw';
    let v: any;
    if (o['on-appliance']) {
      v = await ctx.api.request('POST', `/api/v1/templates/${a[0]}/versions`, { sourcePath: a[1], format });
    } else {
      const bar = new ProgressBar('upload');
      v = await ctx.api.upload(`/api/v1/templates/${a[0]}/versions?format=${encodeURIComponent(format)}`, a[1], (s, t) => bar.update(s, t, formatBytes(s)));
      bar.end();
    }
    print(ctx, v, () => `version ${v.version} (${v.id}): ${formatBytes(v.sizeBytes)} sha256 ${v.sha256}`);
    return 0;
  } },
  'replicas list': { usage: 'replicas list', summary: 'list replicas', async run(ctx) {
    const rows = await ctx.api.request('GET', '/api/v1/replicas');
    list(['id', 'templateName', 'version', 'state', 'storagePoolId', 'size', 'cloneCount'])(ctx, ctx.json ? rows : rows.map((r: any) => ({ ...r, size: formatBytes(r.sizeBytes) })));
    return 0;
  } },
  'replicas promote': { usage: 'replicas promote VERSION_ID STORAGE_POOL_ID [--no-wait]', summary: 'promote a version to a read-only replica', async run(ctx, a) {
    need(a, 2, this.usage);
    const r = await ctx.api.request('POST', '/api/v1/replicas', { templateVersionId: a[0], storagePoolId: a[1] });
    return followJob(ctx, r.job, { replica: r.replica }, async () => ({ replica: await ctx.api.request('GET', `/api/v1/replicas/${r.replica.id}`) }));
  } },
  'replicas show': { usage: 'replicas show ID', summary: 'one replica', async run(ctx, a) {
    need(a, 1, this.usage);
    const r = await ctx.api.request('GET', `/api/v1/replicas/${a[0]}`);
    print(ctx, r, () => kv(r));
    return 0;
  } },
  'replicas verify': { usage: 'replicas verify ID [--no-wait]', summary: 're-hash a replica', async run(ctx, a) {
    need(a, 1, this.usage);
    return followJob(ctx, (await ctx.api.request('POST', `/api/v1/replicas/${a[0]}/verify`)).job);
  } },
  'replicas move': { usage: 'replicas move ID STORAGE_POOL_ID [--no-wait]', summary: 'move a replica to another storage pool', async run(ctx, a) {
    need(a, 2, this.usage);
    return followJob(ctx, (await ctx.api.request('POST', `/api/v1/replicas/${a[0]}/move`, { storagePoolId: a[1] })).job);
  } },
  'replicas delete': { usage: 'replicas delete ID', summary: 'delete a replica (refused while clones use it)', async run(ctx, a) {
    need(a, 1, this.usage);
    await ctx.api.request('DELETE', `/api/v1/replicas/${a[0]}`);
    print(ctx, { deleted: a[0] }, () => `deleted replica ${a[0]}`);
    return 0;
  } },
  'clones list': { usage: 'clones list [--replica ID]', summary: 'list clones', options: { replica: { type: 'string' } }, async run(ctx, _a, o) {
    const rows = await ctx.api.request('GET', `/api/v1/clones${o.replica ? `?replicaId=${o.replica}` : ''}`);
    list(['id', 'name', 'state', 'replicaId', 'size', 'unique'])(ctx, ctx.json ? rows : rows.map((c: any) => ({ ...c, size: formatBytes(c.sizeBytes), unique: formatBytes(c.uniqueBytes) })));
    return 0;
  } },
  'clones create': { usage: 'clones create REPLICA_ID STORAGE_POOL_ID NAME [--size BYTES] [--iops N] [--bps N]', summary: 'create a linked clone', options: { size: { type: 'string' }, iops: { type: 'string' }, bps: { type: 'string' } }, async run(ctx, a, o) {
    need(a, 3, this.usage);
    const qos = o.iops || o.bps ? { ...(o.iops ? { iops: Number(o.iops) } : {}), ...(o.bps ? { bytesPerSecond: Number(o.bps) } : {}) } : undefined;
    const c = await ctx.api.request('POST', '/api/v1/clones', { replicaId: a[0], storagePoolId: a[1], name: a[2], ...(o.size ? { sizeBytes: Number(o.size) } : {}), ...(qos ? { qos } : {}) });
    print(ctx, c, () => `created clone ${c.name} (${c.id})`);
    return 0;
  } },
  'clones show': { usage: 'clones show ID', summary: 'one clone', async run(ctx, a) {
    need(a, 1, this.usage);
    const c = await ctx.api.request('GET', `/api/v1/clones/${a[0]}`);
    print(ctx, c, () => kv(c));
    return 0;
  } },
  'clones qos': { usage: 'clones qos ID [--iops N|none] [--bps N|none]', summary: 'change QoS limits', options: { iops: { type: 'string' }, bps: { type: 'string' } }, async run(ctx, a, o) {
    need(a, 1, this.usage);
    const val = (v: unknown) => (v === undefined ? undefined : v === 'none' ? null : Number(v));
    const c = await ctx.api.request('PATCH', `/api/v1/clones/${a[0]}`, { qos: { iops: val(o.iops), bytesPerSecond: val(o.bps) } });
    print(ctx, c, () => `qos ${JSON.stringify(c.qos)}`);
    return 0;
  } },
  'clones reset': { usage: 'clones reset ID', summary: "drop all the clone's changes", async run(ctx, a) {
    need(a, 1, this.usage);
    const c = await ctx.api.request('POST', `/api/v1/clones/${a[0]}/reset`);
    print(ctx, c, () => `reset clone ${c.name}`);
    return 0;
  } },
  'clones delete': { usage: 'clones delete ID', summary: 'delete a clone', async run(ctx, a) {
    need(a, 1, this.usage);
    await ctx.api.request('DELETE', `/api/v1/clones/${a[0]}`);
    print(ctx, { deleted: a[0] }, () => `deleted clone ${a[0]}`);
    return 0;
  } },
  'hosts list': { usage: 'hosts list', summary: 'list hosts', async run(ctx) {
    list(['id', 'name', 'nqn', 'hookType', 'hostKeyFingerprint'])(ctx, await ctx.api.request('GET', '/api/v1/hosts'));
    return 0;
  } },
  'hosts create': { usage: 'hosts create NAME NQN [--ssh USER@ADDRESS[:PORT] --key-path PATH [--hook-type linux-nvme|libvirt] [--max-desktops N]]', summary: 'register a host by NVMe host NQN (with --ssh, a hypervisor host that runs hooks)', options: { ssh: { type: 'string' }, 'key-path': { type: 'string' }, 'hook-type': { type: 'string' }, 'max-desktops': { type: 'string' } }, async run(ctx, a, o) {
    need(a, 2, this.usage);
    const body: Record<string, unknown> = { name: a[0], nqn: a[1] };
    if (o.ssh !== undefined) body.ssh = sshOption(o, this.usage);
    if (o['hook-type'] !== undefined) body.hookType = String(o['hook-type']);
    if (o['max-desktops'] !== undefined) body.maxDesktops = Number(o['max-desktops']);
    const h = await ctx.api.request('POST', '/api/v1/hosts', body);
    print(ctx, h, () => `created host ${h.name} (${h.id})`);
    return 0;
  } },
  'hosts update': { usage: 'hosts update ID [--name NAME] [--nqn NQN] [--max-desktops N|none] [--ssh USER@ADDRESS[:PORT] --key-path PATH | --no-ssh] [--hook-type linux-nvme|libvirt]', summary: 'change a host (new SSH settings for another address or port drop the pinned key)', options: { name: { type: 'string' }, nqn: { type: 'string' }, ssh: { type: 'string' }, 'no-ssh': { type: 'boolean' }, 'key-path': { type: 'string' }, 'hook-type': { type: 'string' }, 'max-desktops': { type: 'string' } }, async run(ctx, a, o) {
    need(a, 1, this.usage);
    const body: Record<string, unknown> = {};
    if (o.name !== undefined) body.name = String(o.name);
    if (o.nqn !== undefined) body.nqn = String(o.nqn);
    if (o['max-desktops'] !== undefined) body.maxDesktops = o['max-desktops'] === 'none' ? null : Number(o['max-desktops']);
    if (o.ssh !== undefined && o['no-ssh']) throw new UsageError(`usage: thicket ${this.usage}`);
    if (o.ssh !== undefined) body.ssh = sshOption(o, this.usage);
    if (o['no-ssh']) body.ssh = null;
    if (o['hook-type'] !== undefined) body.hookType = String(o['hook-type']);
    if (Object.keys(body).length === 0) throw new UsageError(`usage: thicket ${this.usage}`);
    const h = await ctx.api.request('PATCH', `/api/v1/hosts/${a[0]}`, body);
    print(ctx, h, () => `updated host ${h.name} (${h.id})${h.ssh && !h.hostKeyFingerprint ? '; its host key is not pinned: hosts test, then hosts trust' : ''}`);
    return 0;
  } },
  'hosts test': { usage: 'hosts test ID', summary: "log in over SSH: the host key fingerprint, NQN and tools", async run(ctx, a) {
    need(a, 1, this.usage);
    const r = await ctx.api.request('POST', `/api/v1/hosts/${a[0]}/test`);
    print(ctx, r, () => kv({ fingerprint: r.hostKey.fingerprint, pinned: r.hostKey.pinned, matches: r.hostKey.matches, nqn: r.nqn, nqnMatches: r.nqnMatches, nvmeCli: r.nvmeCli, nvmeTcp: r.nvmeTcp, virsh: r.virsh }));
    return 0;
  } },
  'hosts trust': { usage: 'hosts trust ID SHA256:FINGERPRINT', summary: 'pin the host key hooks must see', async run(ctx, a) {
    need(a, 2, this.usage);
    const h = await ctx.api.request('POST', `/api/v1/hosts/${a[0]}/trust`, { fingerprint: a[1] });
    print(ctx, h, () => `pinned ${h.hostKeyFingerprint} for host ${h.name}`);
    return 0;
  } },
  'hosts delete': { usage: 'hosts delete ID', summary: 'remove a host', async run(ctx, a) {
    need(a, 1, this.usage);
    await ctx.api.request('DELETE', `/api/v1/hosts/${a[0]}`);
    print(ctx, { deleted: a[0] }, () => `deleted host ${a[0]}`);
    return 0;
  } },
  'subsystems list': { usage: 'subsystems list', summary: 'list subsystems', async run(ctx) {
    list(['id', 'name', 'nqn'])(ctx, await ctx.api.request('GET', '/api/v1/subsystems'));
    return 0;
  } },
  'subsystems create': { usage: 'subsystems create NAME', summary: 'create a subsystem', async run(ctx, a) {
    need(a, 1, this.usage);
    const s = await ctx.api.request('POST', '/api/v1/subsystems', { name: a[0] });
    print(ctx, s, () => `created subsystem ${s.nqn} (${s.id})`);
    return 0;
  } },
  'subsystems show': { usage: 'subsystems show ID', summary: 'a subsystem with hosts and namespaces', async run(ctx, a) {
    need(a, 1, this.usage);
    const s = await ctx.api.request('GET', `/api/v1/subsystems/${a[0]}`);
    print(ctx, s, () => `${kv({ id: s.id, nqn: s.nqn, hosts: s.hosts.map((h: any) => h.name).join(', ') })}\n\n${table(s.namespaces, ['nsid', 'cloneId', 'uuid'])}`);
    return 0;
  } },
  'subsystems delete': { usage: 'subsystems delete ID', summary: 'delete a subsystem', async run(ctx, a) {
    need(a, 1, this.usage);
    await ctx.api.request('DELETE', `/api/v1/subsystems/${a[0]}`);
    print(ctx, { deleted: a[0] }, () => `deleted subsystem ${a[0]}`);
    return 0;
  } },
  'subsystems allow': { usage: 'subsystems allow SUBSYSTEM_ID HOST_ID', summary: 'allow a host', async run(ctx, a) {
    need(a, 2, this.usage);
    const s = await ctx.api.request('POST', `/api/v1/subsystems/${a[0]}/hosts`, { hostId: a[1] });
    print(ctx, s, () => `allowed host ${a[1]} in ${s.nqn}`);
    return 0;
  } },
  'subsystems disallow': { usage: 'subsystems disallow SUBSYSTEM_ID HOST_ID', summary: 'disallow a host and disconnect it', async run(ctx, a) {
    need(a, 2, this.usage);
    await ctx.api.request('DELETE', `/api/v1/subsystems/${a[0]}/hosts/${a[1]}`);
    print(ctx, { disallowed: a[1] }, () => `disallowed host ${a[1]}`);
    return 0;
  } },
  'subsystems export': { usage: 'subsystems export SUBSYSTEM_ID CLONE_ID [--hosts ID,ID]', summary: 'export a clone as a namespace', options: { hosts: { type: 'string' } }, async run(ctx, a, o) {
    need(a, 2, this.usage);
    const n = await ctx.api.request('POST', `/api/v1/subsystems/${a[0]}/namespaces`, { cloneId: a[1], ...(o.hosts ? { hostIds: String(o.hosts).split(',') } : {}) });
    print(ctx, n, () => `exported as nsid ${n.nsid} (uuid ${n.uuid})`);
    return 0;
  } },
  'subsystems unexport': { usage: 'subsystems unexport SUBSYSTEM_ID NSID', summary: 'unexport a namespace', async run(ctx, a) {
    need(a, 2, this.usage);
    await ctx.api.request('DELETE', `/api/v1/subsystems/${a[0]}/namespaces/${a[1]}`);
    print(ctx, { unexported: Number(a[1]) }, () => `unexported nsid ${a[1]}`);
    return 0;
  } },
  'pools list': { usage: 'pools list', summary: 'list desktop pools', async run(ctx) {
    const rows = await ctx.api.request('GET', '/api/v1/desktop-pools');
    list(['id', 'name', 'state', 'size', 'available', 'inUse', 'failed', 'saved'])(ctx, ctx.json ? rows : rows.map((p: any) => ({ ...p, available: p.desktops.available, inUse: p.desktops['in-use'], failed: p.desktops.failed ?? 0, saved: formatBytes(p.space.savedBytes) })));
    return 0;
  } },
  'pools create': { usage: 'pools create NAME --replica ID --storage-pool ID --size N --pattern PATTERN [--hosts ID,ID] [--grace SECONDS] [--no-wait]', summary: 'create a desktop pool in one burst', options: { replica: { type: 'string' }, 'storage-pool': { type: 'string' }, size: { type: 'string' }, pattern: { type: 'string' }, hosts: { type: 'string' }, grace: { type: 'string' } }, async run(ctx, a, o) {
    need(a, 1, this.usage);
    if (!o.replica || !o['storage-pool'] || o.size === undefined || !o.pattern) throw new UsageError(`usage: thicket ${this.usage}`);
    const r = await ctx.api.request('POST', '/api/v1/desktop-pools', {
      name: a[0],
      replicaId: o.replica,
      storagePoolId: o['storage-pool'],
      size: Number(o.size),
      namePattern: o.pattern,
      hostIds: o.hosts ? String(o.hosts).split(',') : [],
      ...(o.grace ? { refreshGraceSeconds: Number(o.grace) } : {}),
    });
    return followJob(ctx, r.job, { pool: r.pool }, async () => ({ pool: await ctx.api.request('GET', `/api/v1/desktop-pools/${r.pool.id}`) }));
  } },
  'pools show': { usage: 'pools show ID', summary: 'one desktop pool', async run(ctx, a) {
    need(a, 1, this.usage);
    const p = await ctx.api.request('GET', `/api/v1/desktop-pools/${a[0]}`);
    print(ctx, p, () => kv({ id: p.id, name: p.name, state: p.state, size: p.size, replica: p.replicaId, desktops: p.desktops, unique: formatBytes(p.space.uniqueBytes), saved: formatBytes(p.space.savedBytes), ...(p.error ? { error: p.error } : {}) }));
    return 0;
  } },
  'pools desktops': { usage: 'pools desktops ID', summary: 'the desktops of a pool', async run(ctx, a) {
    need(a, 1, this.usage);
    list(['name', 'state', 'subsystemNqn', 'nsid', 'uuid'])(ctx, await ctx.api.request('GET', `/api/v1/desktop-pools/${a[0]}/desktops`));
    return 0;
  } },
  'pools resize': { usage: 'pools resize ID SIZE [--force] [--no-wait]', summary: 'grow or shrink a pool', options: { force: { type: 'boolean' } }, async run(ctx, a, o) {
    need(a, 2, this.usage);
    const r = await ctx.api.request('PATCH', `/api/v1/desktop-pools/${a[0]}`, { size: Number(a[1]), ...(o.force ? { force: true } : {}) });
    return followJob(ctx, r.job, { pool: r.pool }, async () => ({ pool: await ctx.api.request('GET', `/api/v1/desktop-pools/${r.pool.id}`) }));
  } },
  'pools refresh': { usage: 'pools refresh ID [--desktops A,B] [--force] [--no-wait]', summary: 'reset desktops to the replica', options: { desktops: { type: 'string' }, force: { type: 'boolean' } }, async run(ctx, a, o) {
    need(a, 1, this.usage);
    const r = await ctx.api.request('POST', `/api/v1/desktop-pools/${a[0]}/refresh`, { ...(o.desktops ? { desktops: String(o.desktops).split(',') } : {}), ...(o.force ? { force: true } : {}) });
    return followJob(ctx, r.job);
  } },
  'pools recompose': { usage: 'pools recompose ID REPLICA_ID [--force] [--no-wait]', summary: 'move desktops to a newer replica', options: { force: { type: 'boolean' } }, async run(ctx, a, o) {
    need(a, 2, this.usage);
    const r = await ctx.api.request('POST', `/api/v1/desktop-pools/${a[0]}/recompose`, { replicaId: a[1], ...(o.force ? { force: true } : {}) });
    return followJob(ctx, r.job);
  } },
  'pools delete': { usage: 'pools delete ID [--no-wait]', summary: 'delete a pool and its clones', async run(ctx, a) {
    need(a, 1, this.usage);
    return followJob(ctx, (await ctx.api.request('DELETE', `/api/v1/desktop-pools/${a[0]}`)).job);
  } },
  'pools state': { usage: 'pools state ID DESKTOP in-use|available', summary: 'mark a desktop in use or available', async run(ctx, a) {
    need(a, 3, this.usage);
    const d = await ctx.api.request('POST', `/api/v1/desktop-pools/${a[0]}/desktops/${encodeURIComponent(a[1])}/state`, { state: a[2] });
    print(ctx, d, () => `${d.name} is ${d.state}`);
    return 0;
  } },
  'schedules list': { usage: 'schedules list [--pool ID]', summary: 'list schedules with their next run and last outcome', options: { pool: { type: 'string' } }, async run(ctx, _a, o) {
    const rows = await ctx.api.request('GET', o.pool ? `/api/v1/desktop-pools/${o.pool}/schedules` : '/api/v1/schedules');
    list(['id', 'poolId', 'cron', 'timezone', 'action', 'waveSize', 'inUse', 'enabled', 'nextRunAt', 'lastRun'])(ctx, ctx.json ? rows : rows.map((s: any) => ({ ...s, nextRunAt: s.nextRunAt ?? '-', lastRun: s.lastRun ? `${s.lastRun.scheduledFor} ${s.lastRun.state}` : '-' })));
    return 0;
  } },
  'schedules create': { usage: `schedules create POOL_ID --cron 'S M H DOM MON DOW' --action refresh|recompose-latest --wave-size N [--in-use skip|wait|force] [--wait-deadline MINUTES] [--max-failures N] [--timezone TZ] [--disabled]`, summary: 'refresh or recompose a pool on a schedule, in waves', options: SCHEDULE_OPTIONS, async run(ctx, a, o) {
    need(a, 1, this.usage);
    if (!o.cron || !o.action || o['wave-size'] === undefined) throw new UsageError(`usage: thicket ${this.usage}`);
    const s = await ctx.api.request('POST', `/api/v1/desktop-pools/${a[0]}/schedules`, { inUse: 'skip', ...scheduleBody(o), enabled: o.disabled !== true });
    print(ctx, s, () => `created schedule ${s.id}; next run ${s.nextRunAt ?? '(disabled)'}`);
    return 0;
  } },
  'schedules update': { usage: `schedules update POOL_ID ID [--cron EXPR] [--action A] [--wave-size N] [--in-use P] [--wait-deadline MINUTES] [--max-failures N] [--timezone TZ]`, summary: 'change a schedule', options: SCHEDULE_OPTIONS, async run(ctx, a, o) {
    need(a, 2, this.usage);
    const s = await ctx.api.request('PATCH', `/api/v1/desktop-pools/${a[0]}/schedules/${a[1]}`, scheduleBody(o));
    print(ctx, s, () => kv({ id: s.id, cron: s.cron, timezone: s.timezone, action: s.action, waveSize: s.waveSize, inUse: s.inUse, enabled: s.enabled, nextRunAt: s.nextRunAt }));
    return 0;
  } },
  'schedules enable': { usage: 'schedules enable POOL_ID ID', summary: 'enable a schedule', async run(ctx, a) {
    need(a, 2, this.usage);
    const s = await ctx.api.request('PATCH', `/api/v1/desktop-pools/${a[0]}/schedules/${a[1]}`, { enabled: true });
    print(ctx, s, () => `enabled schedule ${s.id}; next run ${s.nextRunAt}`);
    return 0;
  } },
  'schedules disable': { usage: 'schedules disable POOL_ID ID', summary: 'disable a schedule (a run in progress goes on)', async run(ctx, a) {
    need(a, 2, this.usage);
    const s = await ctx.api.request('PATCH', `/api/v1/desktop-pools/${a[0]}/schedules/${a[1]}`, { enabled: false });
    print(ctx, s, () => `disabled schedule ${s.id}`);
    return 0;
  } },
  'schedules delete': { usage: 'schedules delete POOL_ID ID', summary: 'delete a schedule', async run(ctx, a) {
    need(a, 2, this.usage);
    await ctx.api.request('DELETE', `/api/v1/desktop-pools/${a[0]}/schedules/${a[1]}`);
    print(ctx, { deleted: a[1] }, () => `deleted schedule ${a[1]}`);
    return 0;
  } },
  'schedules runs': { usage: 'schedules runs POOL_ID ID', summary: 'the run history of a schedule', async run(ctx, a) {
    need(a, 2, this.usage);
    const rows = await ctx.api.request('GET', `/api/v1/desktop-pools/${a[0]}/schedules/${a[1]}/runs`);
    list(['scheduledFor', 'trigger', 'state', 'jobId', 'desktops', 'note'])(ctx, ctx.json ? rows : rows.map((r: any) => ({ ...r, jobId: r.jobId ?? '-', desktops: `${r.desktops.succeeded} ok, ${r.desktops.failed} failed, ${r.desktops.skipped} skipped`, note: r.skippedReason ?? r.error?.message ?? '' })));
    return 0;
  } },
  'jobs list': { usage: 'jobs list [--state running,queued]', summary: 'list jobs', options: { state: { type: 'string' } }, async run(ctx, _a, o) {
    const rows = await ctx.api.request('GET', `/api/v1/jobs${o.state ? `?state=${o.state}` : ''}`);
    list(['id', 'kind', 'state', 'progress', 'createdAt'])(ctx, ctx.json ? rows : rows.map((j: any) => ({ ...j, progress: `${j.progress.done}/${j.progress.total}` })));
    return 0;
  } },
  'jobs show': { usage: 'jobs show ID', summary: 'one job with results and error', async run(ctx, a) {
    need(a, 1, this.usage);
    const j = await ctx.api.request('GET', `/api/v1/jobs/${a[0]}`);
    print(ctx, j, () => kv(j));
    return j.state === 'failed' ? 1 : 0;
  } },
  'jobs watch': { usage: 'jobs watch ID', summary: 'follow a job to its end (exit 1 if it fails)', async run(ctx, a) {
    need(a, 1, this.usage);
    return followJob({ ...ctx, wait: true }, { id: a[0], kind: 'job' });
  } },
  'jobs cancel': { usage: 'jobs cancel ID', summary: 'cancel a job', async run(ctx, a) {
    need(a, 1, this.usage);
    const j = await ctx.api.request('POST', `/api/v1/jobs/${a[0]}/cancel`);
    print(ctx, j, () => `cancel requested for job ${j.id}`);
    return 0;
  } },
};

function help(group?: string): string {
  const entries = Object.entries(COMMANDS).filter(([k]) => !group || k.startsWith(`${group} `));
  const lines = entries.map(([, c]) => `  thicket ${c.usage.padEnd(70)} ${c.summary}`);
  return [
    'thicket: manage a Thicket appliance through its API',
    '',
    'Environment: THICKET_URL (default http://127.0.0.1:8080), THICKET_TOKEN (admin or API token).',
    'Global options: --json (machine-readable output), --no-wait (do not follow jobs), --help.',
    '',
    ...lines,
  ].join('\n');
}

export async function run(argv: string[], out: (text: string) => void = (t) => process.stdout.write(`${t}\n`), err: (text: string) => void = (t) => process.stderr.write(`${t}\n`)): Promise<number> {
  const positionals = argv.filter((a) => !a.startsWith('-'));
  const key = positionals.slice(0, 2).join(' ');
  const wantsHelp = argv.includes('--help') || argv.includes('-h');
  const command = COMMANDS[key];
  if (!command) {
    if (wantsHelp || argv.length === 0 || positionals[0] === 'help') {
      out(help(Object.keys(COMMANDS).some((k) => k.startsWith(`${positionals[0]} `)) ? positionals[0] : undefined));
      return 0;
    }
    err(`thicket: unknown command "${positionals.join(' ')}"; see thicket --help`);
    return 2;
  }
  if (wantsHelp) {
    out(`usage: thicket ${command.usage}\n\n${command.summary}`);
    return 0;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: { json: { type: 'boolean' }, 'no-wait': { type: 'boolean' }, url: { type: 'string' }, token: { type: 'string' }, ...(command.options ?? {}) },
    });
  } catch (e) {
    err(`thicket: ${(e as Error).message}\nusage: thicket ${command.usage}`);
    return 2;
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const url = (values.url as string) ?? process.env.THICKET_URL ?? 'http://127.0.0.1:8080';
  const token = (values.token as string) ?? process.env.THICKET_TOKEN;
  if (!token) {
    err('thicket: set THICKET_TOKEN (or pass --token) to the admin token');
    return 2;
  }
  const ctx: Ctx = { api: new ApiClient(url, token), json: values.json === true, wait: values['no-wait'] !== true, out };
  try {
    return await command.run(ctx, parsed.positionals.slice(2), values);
  } catch (e) {
    if (e instanceof UsageError) {
      err(e.message);
      return 2;
    }
    if (e instanceof ApiError) {
      if (ctx.json) out(JSON.stringify({ error: { code: e.code, message: e.message, details: e.details } }, null, 2));
      err(`thicket: ${e.code}: ${e.message}`);
      return 1;
    }
    err(`thicket: ${(e as Error).message}${(e as { cause?: Error }).cause ? ` (${(e as { cause: Error }).cause.message})` : ''}`);
    return 1;
  }
}
