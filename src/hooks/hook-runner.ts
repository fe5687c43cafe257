// Runs hook scripts on hypervisor hosts over SSH: one reused connection per host, at most
// `perHostConcurrency` hooks at once on a host and `totalConcurrency` overall, a timeout per run, and
// retries with backoff for transient failures (connection trouble, exit code 75). A run's result says
// what happened to one desktop; nothing here touches the database.
import { readFile } from 'node:fs/promises';
import type { HookType } from '../db/schema.ts';
import { ExecTimeoutError, HostKeyError, SshConnectError, SshKeyUnreadableError, SshSession, type SshTarget } from './ssh-session.ts';
import { assertSafeName, HookTemplates, renderShellVars, type HookAction } from './render.ts';
import type { SecretBox } from './secret-box.ts';
import { Semaphore } from './semaphore.ts';
import type { ProbeReport } from '../dto.ts';
export type { ProbeReport } from '../dto.ts';

/** What the runner needs of a host row. */
export interface HookHost {
  id: string;
  name: string;
  nqn: string;
  hook_type: HookType | null;
  ssh_address: string | null;
  ssh_port: number | null;
  ssh_username: string | null;
  ssh_private_key_enc: string | null;
  ssh_private_key_path: string | null;
  host_key_fingerprint: string | null;
}

/** One desktop as a hook sees it. */
export interface HookDesktop {
  poolId: string;
  poolName: string;
  desktopId: string;
  desktop: string;
  nsUuid: string;
  subsystemNqn: string;
  vm: { vcpus: number; memoryMiB: number; network: string };
}

export type HookOutcome =
  | { ok: true; stdout: string; attempts: number }
  | { ok: false; code: string; error: string; stdout: string; transient: boolean; attempts: number };


export interface HookRunnerOptions {
  templatesDir: string;
  secrets: SecretBox;
  /** Where hosts dial Thicket's NVMe/TCP target. */
  target: () => { address: string; port: number };
  /** Base URL hosts use for the API, and the token a host reports with. */
  apiUrl: () => string;
  hostToken: (hostId: string) => string;
  perHostConcurrency?: number;
  totalConcurrency?: number;
  connectTimeoutMs?: number;
  execTimeoutMs?: number;
  /** Attempts for a transient failure, the first included. */
  attempts?: number;
  backoffMs?: number;
  /** A host's connection is closed after this long without a hook. */
  idleCloseMs?: number;
  /** Host-side paths and settings rendered into every hook. */
  linkDir?: string;
  stateDir?: string;
  libvirtUri?: string;
  libvirtHookDir?: string;
  namespaceWaitSeconds?: number;
  log?: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void };
}

interface PooledConnection {
  key: string;
  session: Promise<SshSession>;
  limit: Semaphore;
  idleTimer?: NodeJS.Timeout;
  users: number;
}

const TEMPFAIL = 75;

export class HookRunner {
  readonly templates: HookTemplates;
  #options: Required<Omit<HookRunnerOptions, 'log'>> & Pick<HookRunnerOptions, 'log'>;
  #total: Semaphore;
  #connections = new Map<string, PooledConnection>();
  #closed = false;

  constructor(options: HookRunnerOptions) {
    this.#options = {
      perHostConcurrency: 4,
      totalConcurrency: 16,
      connectTimeoutMs: 15_000,
      execTimeoutMs: 180_000,
      // About 15 s of retries (1, 2, 4, 8 s): long enough for an sshd restart or a short network blip.
      attempts: 5,
      backoffMs: 1000,
      idleCloseMs: 60_000,
      linkDir: '/dev/thicket',
      stateDir: '/var/lib/thicket',
      libvirtUri: 'qemu:///system',
      libvirtHookDir: '/etc/libvirt/hooks/qemu.d',
      namespaceWaitSeconds: 60,
      ...options,
    };
    this.templates = new HookTemplates(options.templatesDir);
    this.#total = new Semaphore(this.#options.totalConcurrency);
  }

  async #sshTarget(host: HookHost): Promise<SshTarget> {
    if (!host.ssh_address || !host.ssh_port || !host.ssh_username || !host.hook_type) {
      throw new SshConnectError(`host ${host.name} has no SSH settings`, false);
    }
    let privateKey: string;
    if (host.ssh_private_key_enc) privateKey = this.#options.secrets.decrypt(host.ssh_private_key_enc);
    else if (host.ssh_private_key_path) {
      try {
        privateKey = await readFile(host.ssh_private_key_path, 'utf8');
      } catch (err) {
        throw new SshKeyUnreadableError(`cannot read the private key ${host.ssh_private_key_path} of host ${host.name} on this node: ${(err as Error).message}`, { cause: err });
      }
    } else throw new SshConnectError(`host ${host.name} has no private key`, false);
    return { address: host.ssh_address, port: host.ssh_port, username: host.ssh_username, privateKey, pinnedFingerprint: host.host_key_fingerprint, hostId: host.id };
  }

  // A connection is reused only while the settings it was made with still hold.
  #connectionKey(host: HookHost): string {
    return [host.ssh_address, host.ssh_port, host.ssh_username, host.ssh_private_key_enc ?? host.ssh_private_key_path, host.host_key_fingerprint].join('|');
  }

  #connection(host: HookHost): PooledConnection {
    const key = this.#connectionKey(host);
    let c = this.#connections.get(host.id);
    if (c && c.key !== key) {
      this.#drop(host.id, c);
      c = undefined;
    }
    if (!c) {
      const entry: PooledConnection = {
        key,
        limit: new Semaphore(this.#options.perHostConcurrency),
        users: 0,
        session: this.#sshTarget(host).then((t) => SshSession.connect(t, { timeoutMs: this.#options.connectTimeoutMs })),
      };
      entry.session.then(
        (s) => s.onClose(() => this.#connections.get(host.id) === entry && this.#connections.delete(host.id)),
        () => this.#connections.get(host.id) === entry && this.#connections.delete(host.id),
      );
      this.#connections.set(host.id, entry);
      c = entry;
    }
    return c;
  }

  #drop(hostId: string, c: PooledConnection): void {
    if (this.#connections.get(hostId) === c) this.#connections.delete(hostId);
    if (c.idleTimer) clearTimeout(c.idleTimer);
    c.session.then((s) => s.close(), () => {});
  }

  /** Forgets a host's connection (its settings or pinned key changed, or it was deleted). */
  forget(hostId: string): void {
    const c = this.#connections.get(hostId);
    if (c) this.#drop(hostId, c);
  }

  #vars(host: HookHost, d?: HookDesktop): Record<string, string | number> {
    const t = this.#options.target();
    const o = this.#options;
    const vars: Record<string, string | number> = {
      THICKET_HOST_NAME: host.name,
      THICKET_HOST_NQN: host.nqn,
      THICKET_TARGET_ADDRESS: t.address,
      THICKET_TARGET_PORT: t.port,
      THICKET_LINK_DIR: o.linkDir,
      THICKET_STATE_DIR: o.stateDir,
      THICKET_LIBVIRT_URI: o.libvirtUri,
      THICKET_LIBVIRT_HOOK_DIR: o.libvirtHookDir,
      THICKET_RECONNECT_DELAY: 2,
      THICKET_CTRL_LOSS_TMO: 600,
      THICKET_WAIT_SECONDS: o.namespaceWaitSeconds,
    };
    if (!d) return vars;
    assertSafeName('desktop name', d.desktop);
    assertSafeName('pool name', d.poolName);
    const domain = domainName(d.poolName, d.desktop);
    Object.assign(vars, {
      THICKET_POOL_ID: d.poolId,
      THICKET_POOL: d.poolName,
      THICKET_DESKTOP: d.desktop,
      THICKET_DOMAIN: domain,
      THICKET_NS_UUID: d.nsUuid,
      THICKET_SUBSYSTEM_NQN: d.subsystemNqn,
    });
    if (host.hook_type === 'libvirt') {
      vars.THICKET_DOMAIN_XML = this.templates.domainXml({
        domain,
        uuid: d.desktopId,
        poolId: d.poolId,
        desktop: d.desktop,
        vcpus: d.vm.vcpus,
        memoryMiB: d.vm.memoryMiB,
        network: d.vm.network,
        disk: `${o.linkDir}/${d.desktop}`,
      });
      vars.THICKET_QEMU_HOOK = this.qemuHookScript(host);
    }
    return vars;
  }

  /** The libvirt qemu hook script installed on a host: its API URL and token, then the template. */
  qemuHookScript(host: HookHost): string {
    const vars = renderShellVars({ THICKET_API_URL: this.#options.apiUrl(), THICKET_HOST_TOKEN: this.#options.hostToken(host.id), THICKET_STATE_DIR: this.#options.stateDir });
    return `#!/bin/sh\n# Installed by Thicket for host ${host.id}; rewritten on every attach.\n${vars}${this.templates.read('hooks/libvirt/qemu-hook.sh').trimEnd()}`;
  }

  /** The script one run would send (for tests and for operators reading what runs on their hosts). */
  script(host: HookHost, action: HookAction, desktop?: HookDesktop): string {
    return this.templates.script(host.hook_type!, action, this.#vars(host, desktop));
  }

  /**
   * Connects with the host key as it is (reporting it even when not pinned; a pinned key that does not
   * match is refused) and reports what the host has.
   */
  async probe(host: HookHost): Promise<ProbeReport> {
    const target = await this.#sshTarget(host);
    const session = await SshSession.connect(target, { timeoutMs: this.#options.connectTimeoutMs, allowUnpinned: true });
    try {
      const r = await session.exec('/bin/sh -s', { stdin: this.script(host, 'probe'), timeoutMs: 30_000 });
      if (r.code !== 0) throw new SshConnectError(`the probe script failed (exit ${r.code}): ${r.stderr.trim()}`, false);
      const kv = new Map<string, string>();
      for (const line of r.stdout.split('\n')) {
        const m = /^([a-z_]+)=(.*)$/.exec(line.trim());
        if (m) kv.set(m[1], m[2]);
      }
      const nqn = kv.get('hostnqn') || null;
      return {
        hostKey: {
          ...session.hostKey,
          pinned: host.host_key_fingerprint !== null,
          matches: host.host_key_fingerprint === null ? null : host.host_key_fingerprint === session.hostKey.fingerprint,
        },
        nqn,
        nqnMatches: nqn === host.nqn,
        nvmeCli: kv.get('nvme_cli') === 'yes',
        nvmeTcp: kv.get('nvme_tcp') === 'yes',
        virsh: kv.has('virsh') ? kv.get('virsh') === 'yes' : null,
        kernel: kv.get('kernel') ?? null,
      };
    } finally {
      session.close();
    }
  }

  /**
   * Runs one action for one desktop on its host, retrying transient failures with backoff. Once `signal`
   * is aborted (a cancelled job) it starts no further attempt, also when its turn comes in the queue.
   */
  async run(host: HookHost, action: HookAction, desktop: HookDesktop, signal?: AbortSignal): Promise<HookOutcome> {
    if (!host.hook_type) return { ok: false, code: 'HOST_HAS_NO_HOOKS', error: `host ${host.name} has no SSH hooks`, stdout: '', transient: false, attempts: 0 };
    if (!this.templates.hasAction(host.hook_type, action)) return { ok: true, stdout: '', attempts: 0 };
    const address = this.#options.target().address;
    if (action === 'attach' && (address === '0.0.0.0' || address === '::' || address === '')) {
      // A wildcard listen address is no address to dial: `nvme connect -a 0.0.0.0` connects the host to itself.
      return { ok: false, code: 'TARGET_ADDRESS_UNSET', error: `the NVMe/TCP target listens on ${address || 'an unknown address'} and THICKET_NVME_ADVERTISE_ADDR is not set: hosts cannot be told where to connect; set it to an address they reach`, stdout: '', transient: false, attempts: 0 };
    }
    if (action === 'attach' && host.hook_type === 'libvirt' && /^https?:\/\/(0\.0\.0\.0|\[::\])(:|\/|$)/.test(this.#options.apiUrl())) {
      return { ok: false, code: 'PUBLIC_URL_UNSET', error: `the HTTP API listens on a wildcard address and THICKET_PUBLIC_URL is not set: the libvirt hook could not report VM events (${this.#options.apiUrl()}); set it to a URL hosts reach`, stdout: '', transient: false, attempts: 0 };
    }
    let script: string;
    try {
      script = this.script(host, action, desktop);
    } catch (err) {
      return { ok: false, code: 'HOOK_TEMPLATE', error: (err as Error).message, stdout: '', transient: false, attempts: 0 };
    }
    let last: HookOutcome | undefined;
    for (let attempt = 1; attempt <= this.#options.attempts; attempt++) {
      if (this.#closed) break;
      if (signal?.aborted) return cancelled(attempt - 1);
      last = await this.#once(host, script, attempt, signal);
      if (last.ok || !last.transient) return last;
      if (attempt < this.#options.attempts) {
        const wait = this.#options.backoffMs * 2 ** (attempt - 1) * (0.75 + Math.random() * 0.5);
        this.#options.log?.warn({ host: host.name, desktop: desktop.desktop, action, attempt, error: last.error }, 'hook failed; retrying');
        await new Promise((r) => setTimeout(r, wait));
      }
    }
    return last ?? { ok: false, code: 'HOOK_RUNNER_CLOSED', error: 'the hook runner is shutting down', stdout: '', transient: true, attempts: 0 };
  }

  async #once(host: HookHost, script: string, attempt: number, signal?: AbortSignal): Promise<HookOutcome> {
    // The host's own slot first, then a global one: runs queued behind a slow host's limit must not sit
    // on global slots that other hosts could use meanwhile.
    const c = this.#connection(host);
    c.users++;
    if (c.idleTimer) clearTimeout(c.idleTimer);
    try {
      return await c.limit.use(() =>
        this.#total.use(async () => {
          if (signal?.aborted) return cancelled(attempt - 1);
          let session: SshSession;
          try {
            session = await c.session;
          } catch (err) {
            this.#drop(host.id, c);
            return failure(err, attempt);
          }
          try {
            const r = await session.exec(remoteCommand(this.#options.execTimeoutMs), { stdin: script, timeoutMs: this.#options.execTimeoutMs });
            if (r.code === 0) return { ok: true as const, stdout: r.stdout, attempts: attempt };
            if (r.code === REMOTE_TIMEOUT || r.code === REMOTE_KILLED) {
              return { ok: false as const, code: 'HOOK_TIMEOUT', error: `the hook was stopped on the host after ${remoteSeconds(this.#options.execTimeoutMs)} s${r.stderr.trim() ? `: ${r.stderr.trim().slice(-2000)}` : ''}`, stdout: r.stdout, transient: false, attempts: attempt };
            }
            const why = r.stderr.trim() || r.stdout.trim() || `exit code ${r.code ?? `signal ${r.signal}`}`;
            return { ok: false as const, code: 'HOOK_FAILED', error: why, stdout: r.stdout, transient: r.code === TEMPFAIL, attempts: attempt };
          } catch (err) {
            if (err instanceof SshConnectError) this.#drop(host.id, c);
            return failure(err, attempt);
          }
        }),
      );
    } finally {
      c.users--;
      if (c.users === 0 && this.#connections.get(host.id) === c) {
        c.idleTimer = setTimeout(() => this.#drop(host.id, c), this.#options.idleCloseMs);
        c.idleTimer.unref();
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const [id, c] of this.#connections) this.#drop(id, c);
  }
}

function cancelled(attempts: number): HookOutcome {
  return { ok: false, code: 'CANCELLED', error: 'the job was cancelled before this hook ran', stdout: '', transient: false, attempts };
}

/** Exit codes of `timeout` on the host: the time ran out (TERM), or the run was killed (KILL). */
const REMOTE_TIMEOUT = 124;
const REMOTE_KILLED = 137;

/** The host stops a hook a little before Thicket gives up waiting for it. */
function remoteSeconds(execTimeoutMs: number): number {
  return Math.max(1, Math.floor(execTimeoutMs / 1000) - 5);
}

/**
 * The command a hook runs as: the script on stdin, under the host's own `timeout` when it has one
 * (coreutils or busybox). Closing the SSH channel or sending it a signal does not stop a remote command
 * (OpenSSH ignores channel signals), so without this a hook Thicket gave up on would go on changing the
 * host after its desktop was marked failed. KILL reaches the whole process group (the script's children).
 */
function remoteCommand(execTimeoutMs: number): string {
  const secs = remoteSeconds(execTimeoutMs);
  return `if command -v timeout >/dev/null 2>&1; then exec timeout -s KILL ${secs} /bin/sh -s; else exec /bin/sh -s; fi`;
}

function failure(err: unknown, attempt: number): HookOutcome {
  if (err instanceof HostKeyError) return { ok: false, code: err.code, error: err.message, stdout: '', transient: false, attempts: attempt };
  if (err instanceof SshKeyUnreadableError) return { ok: false, code: 'SSH_KEY_UNREADABLE', error: err.message, stdout: '', transient: false, attempts: attempt };
  if (err instanceof SshConnectError) return { ok: false, code: 'SSH_CONNECT_FAILED', error: err.message, stdout: '', transient: err.transient, attempts: attempt };
  if (err instanceof ExecTimeoutError) {
    const tail = err.partial.stderr.trim();
    return { ok: false, code: 'HOOK_TIMEOUT', error: `${err.message}${tail ? `: ${tail}` : ''}`, stdout: err.partial.stdout, transient: false, attempts: attempt };
  }
  return { ok: false, code: 'HOOK_ERROR', error: (err as Error)?.message ?? String(err), stdout: '', transient: false, attempts: attempt };
}

/** The libvirt domain name of a desktop: unique per host because pool names are unique. */
export function domainName(poolName: string, desktop: string): string {
  // "+" is not allowed in pool or desktop names, so no two (pool, desktop) pairs share a domain name
  // ("--" could: pool "lab" with desktop "x--1" and pool "lab--x" with desktop "1").
  return `${poolName}+${desktop}`;
}
