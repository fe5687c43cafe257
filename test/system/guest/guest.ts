// A small Linux guest under QEMU for system tests against the real kernel NVMe/TCP initiator.
//
// The guest (built and cached by build-guest.sh) runs from an initramfs: Debian's cloud kernel with
// nvme-tcp, nvme-cli, fio, e2fsprogs, blkdiscard and busybox. It has QEMU user networking: it is
// 10.0.2.15 and reaches the host's loopback at 10.0.2.2 (a target on 127.0.0.1:4420 is
// 10.0.2.2:4420 in the guest, and sees the guest's connections as coming from 127.0.0.1).
//
// Commands go to an agent in the guest over a virtio-serial port (QEMU's stdio; the kernel console is
// ttyS0, kept in a log file): each one is a bash script run with a timeout, answered with its exit
// code, stdout and stderr (base64 on the wire, so any bytes pass). One command runs at a time; run()
// calls queue. PATH finds the real nvme-cli, fio, kmod, e2fsprogs and util-linux tools first, then
// busybox's applets.
//
//   const guest = await Guest.boot({ hostNqn: 'nqn.2014-08.org.nvmexpress:uuid:…' });
//   const { code, stdout } = await guest.run('nvme discover -t tcp -a 10.0.2.2 -s 8009', 30_000);
//   await guest.shutdown();
//
// KVM is tried first when /dev/kvm exists; a boot that shows no agent within kvmBootTimeoutMs is
// killed and retried under TCG (on some machines /dev/kvm exists but Debian's kernel never gets past
// its setup code). Set THICKET_GUEST_ACCEL=tcg or =kvm to choose, THICKET_GUEST_LOG=1 to echo the
// guest's console and agent traffic to stderr.
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { access, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const BUILD_SCRIPT = path.join(import.meta.dirname, 'build-guest.sh');

export type Accel = 'kvm' | 'tcg';

export interface GuestImage {
  kernel: string;
  initrd: string;
  kernelVersion: string;
  key: string;
  cacheDir: string;
}

export interface GuestOptions {
  /** Written to /etc/nvme/hostnqn (from the kernel command line `thicket.hostnqn=`). */
  hostNqn: string;
  /** Written to /etc/nvme/hostid; default: the UUID in a `…:uuid:<uuid>` NQN, else one derived from it. */
  hostId?: string;
  /** Guest memory; default 1024 MiB (the initramfs alone takes ~100 MiB of it). */
  memoryMiB?: number;
  /** vCPUs (and so NVMe/TCP I/O queues per controller); default 2. */
  cpus?: number;
  /** 'auto' (default, or THICKET_GUEST_ACCEL): KVM when /dev/kvm exists, TCG when KVM stalls. */
  accel?: Accel | 'auto';
  /** How long a KVM boot may take to show the agent before it is given up for TCG; default 20 s. */
  kvmBootTimeoutMs?: number;
  /** A KVM boot whose kernel has printed nothing by then is given up for TCG at once; default 8 s. */
  kvmBannerTimeoutMs?: number;
  /** How long a TCG boot may take; default 120 s. */
  tcgBootTimeoutMs?: number;
  /** More kernel command-line arguments. */
  kernelArgs?: string[];
  /** More QEMU arguments (e.g. a -drive). */
  qemuArgs?: string[];
  /** Where the agent listens: a virtio-serial port (default; ~1 MB/s out) or the second 16550 serial port (ttyS1; ~100 KB/s out). */
  agentPort?: 'virtio' | 'serial';
  /** The QEMU process is killed after this long whatever happens (a stray guest never outlives it); default 2 h. */
  maxLifetimeMs?: number;
  /** Runs dropbear on the guest's port 22, forwarded from 127.0.0.1:<sshPort>, accepting this OpenSSH public key for root. */
  ssh?: { port: number; authorizedKey: string };
}

export interface RunResult {
  code: number;
  /** stdout as UTF-8 text. */
  stdout: string;
  stderr: string;
  /** stdout's exact bytes (for binary output; a hash computed in the guest is cheaper to compare). */
  stdoutBytes: Buffer;
}

export class GuestCommandError extends Error {
  readonly command: string;
  readonly result: RunResult;
  constructor(command: string, result: RunResult) {
    super(`guest command failed with exit code ${result.code}: ${command}\n--- stdout\n${result.stdout}--- stderr\n${result.stderr}`);
    this.name = 'GuestCommandError';
    this.command = command;
    this.result = result;
  }
}

const verbose = !!process.env.THICKET_GUEST_LOG && process.env.THICKET_GUEST_LOG !== '0';
const live = new Set<Guest>();
let exitHookInstalled = false;
let buildPromise: Promise<GuestImage> | undefined;
let kvmStalledThisProcess = false;

function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const g of live) g.kill();
  });
}

/** Runs build-guest.sh once per process (it is a no-op but for a version check when its cache is warm). */
export function buildGuestImage(): Promise<GuestImage> {
  buildPromise ??= new Promise<GuestImage>((resolve, reject) => {
    execFile('bash', [BUILD_SCRIPT], { timeout: 20 * 60_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`build-guest.sh failed: ${err.message}\n${stderr.slice(-4000)}`));
        return;
      }
      if (verbose && stderr) process.stderr.write(stderr);
      const kv = new Map<string, string>();
      for (const line of stdout.split('\n')) {
        const m = /^([A-Z]+)=(.*)$/.exec(line.trim());
        if (m) kv.set(m[1], m[2]);
      }
      const kernel = kv.get('KERNEL');
      const initrd = kv.get('INITRD');
      if (!kernel || !initrd) {
        reject(new Error(`build-guest.sh printed no KERNEL=/INITRD=:\n${stdout}\n${stderr.slice(-4000)}`));
        return;
      }
      resolve({ kernel, initrd, kernelVersion: kv.get('KVER') ?? '', key: kv.get('KEY') ?? '', cacheDir: kv.get('CACHE') ?? path.dirname(path.dirname(path.dirname(kernel))) });
    });
  });
  buildPromise.catch(() => {
    buildPromise = undefined;
  });
  return buildPromise;
}

/** The host id the guest uses for a host NQN when none is given. */
export function hostIdFor(hostNqn: string): string {
  const m = /:uuid:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i.exec(hostNqn);
  if (m) return m[1].toLowerCase();
  const h = createHash('sha256').update(hostNqn).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${((parseInt(h[16], 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** A host NQN of the standard uuid form, fresh each call. */
export function randomHostNqn(): string {
  const b = randomBytes(16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `nqn.2014-08.org.nvmexpress:uuid:${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

async function kvmUsable(): Promise<boolean> {
  try {
    await access('/dev/kvm', fsConstants.R_OK | fsConstants.W_OK);
    return true;
  } catch {
    return false;
  }
}

// A KVM stall is remembered for a day in the cache, so that each test file doesn't lose the KVM timeout.
function stallMarker(image: GuestImage) {
  return path.join(image.cacheDir, `kvm-stalls-${os.release()}-${image.key}`);
}
async function kvmKnownToStall(image: GuestImage): Promise<boolean> {
  if (kvmStalledThisProcess) return true;
  try {
    const s = await stat(stallMarker(image));
    return Date.now() - s.mtimeMs < 24 * 3600_000;
  } catch {
    return false;
  }
}

interface Pending {
  id: string;
  command: string;
  stdout: string[];
  stderr: string[];
  section: 'wait' | 'out' | 'err';
  resolve(r: RunResult): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export class Guest {
  /** How long the boot that worked took, from starting QEMU to the agent's prompt. */
  bootMs = 0;
  /** Total time spent in Guest.boot, including a stalled KVM attempt. */
  totalBootMs = 0;
  kernelVersion = '';
  private buf = '';
  private pending: Pending | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private seq = 0;
  private broken: string | undefined;
  private exited = false;
  private readonly exitPromise: Promise<number | null>;
  private readyResolve: ((v: string) => void) | undefined;
  private stderrTail = '';
  private watcherPid: number | undefined;
  private readonly proc: ChildProcessWithoutNullStreams;
  /** The accelerator this guest runs under. */
  readonly accel: Accel;
  /** Temporary directory with the console log (removed by shutdown unless THICKET_GUEST_KEEP is set). */
  readonly dir: string;
  readonly image: GuestImage;
  readonly options: GuestOptions;

  private constructor(proc: ChildProcessWithoutNullStreams, accel: Accel, dir: string, image: GuestImage, options: GuestOptions) {
    this.proc = proc;
    this.accel = accel;
    this.dir = dir;
    this.image = image;
    this.options = options;
    this.exitPromise = new Promise((resolve) => {
      proc.on('exit', (code) => {
        this.exited = true;
        live.delete(this);
        this.fail(`QEMU exited (code ${code})`);
        resolve(code);
      });
    });
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (chunk: string) => this.onData(chunk));
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-4000);
      if (verbose) process.stderr.write(`[qemu] ${chunk}`);
    });
    proc.stdin.on('error', () => {});
  }

  /** Path of the kernel console log (ttyS0). */
  get consoleLogPath() {
    return path.join(this.dir, 'console.log');
  }

  static async boot(options: GuestOptions): Promise<Guest> {
    const started = Date.now();
    const image = await buildGuestImage();
    const wanted = options.accel ?? ((process.env.THICKET_GUEST_ACCEL as Accel | 'auto' | undefined) || 'auto');
    const tries: Accel[] = [];
    if (wanted === 'kvm') tries.push('kvm');
    else if (wanted === 'tcg') tries.push('tcg');
    else {
      if ((await kvmUsable()) && !(await kvmKnownToStall(image))) tries.push('kvm');
      tries.push('tcg');
    }
    const errors: string[] = [];
    for (const accel of tries) {
      const timeoutMs = accel === 'kvm' ? (options.kvmBootTimeoutMs ?? 20_000) : (options.tcgBootTimeoutMs ?? 120_000);
      const guest = await Guest.start(image, accel, options);
      try {
        await guest.waitReady(timeoutMs, accel === 'kvm' ? (options.kvmBannerTimeoutMs ?? 8_000) : undefined);
        guest.totalBootMs = Date.now() - started;
        return guest;
      } catch (e) {
        const consoleTail = await guest.consoleTail(1500);
        errors.push(`${accel}: ${(e as Error).message}\n--- console (tail)\n${consoleTail}\n--- qemu stderr\n${guest.stderrTail}`);
        await guest.shutdown();
        if (accel === 'kvm' && tries.length > 1) {
          kvmStalledThisProcess = true;
          await writeFile(stallMarker(image), `${new Date().toISOString()} ${(e as Error).message}\n`).catch(() => {});
          if (verbose) process.stderr.write(`[guest] KVM boot stalled; retrying under TCG\n`);
        }
      }
    }
    throw new Error(`the test guest did not boot:\n${errors.join('\n')}`);
  }

  private static async start(image: GuestImage, accel: Accel, options: GuestOptions): Promise<Guest> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'thicket-guest-'));
    const hostId = options.hostId ?? hostIdFor(options.hostNqn);
    for (const [name, v] of [['hostNqn', options.hostNqn], ['hostId', hostId]] as const) {
      if (!/^[\x21-\x7e]+$/.test(v)) throw new Error(`${name} must be printable ASCII without spaces: ${JSON.stringify(v)}`);
    }
    const virtio = (options.agentPort ?? 'virtio') === 'virtio';
    const append = [
      'console=ttyS0',
      'panic=-1',
      'loglevel=6',
      'mitigations=off',
      'cryptomgr.notests',
      'audit=0',
      // Debian 6.1's hardened-usercopy check BUGs on NVMe/TCP receives from high-order skb pages
      // ("usercopy: Kernel memory exposure attempt detected from page alloc", seen in nvmet_tcp_io_work):
      // a false positive of the guest kernel that would look like a target failure.
      'hardened_usercopy=off',
      `thicket.hostnqn=${options.hostNqn}`,
      `thicket.hostid=${hostId}`,
      ...(virtio ? ['thicket.agent=vport'] : []),
      ...(options.ssh ? [`thicket.sshkey=${Buffer.from(options.ssh.authorizedKey.trim()).toString('base64')}`] : []),
      ...(options.kernelArgs ?? []),
    ].join(' ');
    const args = [
      '-nodefaults',
      '-no-user-config',
      '-display', 'none',
      ...(accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg']),
      '-m', String(options.memoryMiB ?? 1024),
      '-smp', String(options.cpus ?? 2),
      '-kernel', image.kernel,
      '-initrd', image.initrd,
      '-append', append,
      '-no-reboot',
      '-netdev', options.ssh ? `user,id=n0,hostfwd=tcp:127.0.0.1:${options.ssh.port}-:22` : 'user,id=n0',
      '-device', 'virtio-net-pci,netdev=n0,romfile=',
      '-serial', `file:${path.join(dir, 'console.log')}`,
      ...(virtio
        ? ['-device', 'virtio-serial-pci,romfile=', '-chardev', 'stdio,id=agent,signal=off', '-device', 'virtserialport,chardev=agent,name=thicket.agent']
        : ['-serial', 'stdio']),
      ...(options.qemuArgs ?? []),
    ];
    if (verbose) process.stderr.write(`[guest] qemu-system-x86_64 ${args.join(' ')}\n`);
    const proc = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      proc.once('spawn', () => resolve());
      proc.once('error', (e) => reject(new Error(`cannot start qemu-system-x86_64: ${e.message}`)));
    });
    const guest = new Guest(proc, accel, dir, image, options);
    live.add(guest);
    installExitHook();
    guest.startWatcher(options.maxLifetimeMs ?? 2 * 3600_000);
    return guest;
  }

  // A detached watcher kills this QEMU (by its pid) when this process dies without cleaning up, or when
  // the guest outlives its maximum lifetime.
  private startWatcher(maxLifetimeMs: number) {
    const qpid = this.proc.pid;
    if (!qpid) return;
    const secs = Math.max(1, Math.ceil(maxLifetimeMs / 1000));
    const script = `end=$((SECONDS + ${secs})); while kill -0 ${process.pid} 2>/dev/null && kill -0 ${qpid} 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 2; done; kill -9 ${qpid} 2>/dev/null; exit 0`;
    const w = spawn('bash', ['-c', script], { detached: true, stdio: 'ignore' });
    w.unref();
    this.watcherPid = w.pid;
  }

  // Resolves when the agent prompts. bannerTimeoutMs: reject early when the kernel has printed nothing
  // on the console by then (how a stalled KVM boot looks).
  private waitReady(timeoutMs: number, bannerTimeoutMs?: number): Promise<void> {
    const t0 = Date.now();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readyResolve = undefined;
        reject(new Error(`no agent prompt within ${timeoutMs} ms under ${this.accel}`));
      }, timeoutMs);
      const bannerTimer =
        bannerTimeoutMs === undefined
          ? undefined
          : setTimeout(async () => {
              if (!this.readyResolve || (await this.consoleLog()).includes('Linux version')) return;
              clearTimeout(timer);
              this.readyResolve = undefined;
              reject(new Error(`the kernel printed nothing within ${bannerTimeoutMs} ms under ${this.accel}`));
            }, bannerTimeoutMs);
      this.readyResolve = (kver) => {
        clearTimeout(timer);
        clearTimeout(bannerTimer);
        this.kernelVersion = kver;
        this.bootMs = Date.now() - t0;
        resolve();
      };
      void this.exitPromise.then((code) => {
        clearTimeout(timer);
        clearTimeout(bannerTimer);
        if (this.readyResolve) {
          this.readyResolve = undefined;
          reject(new Error(`QEMU exited (code ${code}) before the agent prompt`));
        }
      });
    });
  }

  private onData(chunk: string) {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).replace(/\r$/, '');
      this.buf = this.buf.slice(nl + 1);
      this.onLine(line);
    }
  }

  private onLine(line: string) {
    const p = this.pending;
    if (line.startsWith('@@THICKET-READY')) {
      const kver = line.slice('@@THICKET-READY'.length).trim();
      const r = this.readyResolve;
      this.readyResolve = undefined;
      r?.(kver);
      return;
    }
    if (p) {
      if (line === `@@THICKET-BEGIN ${p.id}`) {
        p.section = 'out';
        return;
      }
      if (line === `@@THICKET-STDERR ${p.id}`) {
        p.section = 'err';
        return;
      }
      const end = /^@@THICKET-END (\S+) (\d+)$/.exec(line);
      if (end && end[1] === p.id) {
        this.pending = undefined;
        clearTimeout(p.timer);
        const decode = (parts: string[]) => Buffer.from(parts.join(''), 'base64');
        const stdoutBytes = decode(p.stdout);
        const result: RunResult = { code: Number(end[2]), stdout: stdoutBytes.toString('utf8'), stderr: decode(p.stderr).toString('utf8'), stdoutBytes };
        if (verbose) process.stderr.write(`[guest] <- exit ${result.code}\n${result.stdout}${result.stderr}`);
        p.resolve(result);
        return;
      }
      if (p.section === 'out') {
        p.stdout.push(line.trim());
        return;
      }
      if (p.section === 'err') {
        p.stderr.push(line.trim());
        return;
      }
    }
    if (verbose && line.trim()) process.stderr.write(`[guest agent] ${line}\n`);
  }

  private fail(reason: string) {
    this.broken ??= reason;
    const p = this.pending;
    if (p) {
      this.pending = undefined;
      clearTimeout(p.timer);
      p.reject(new Error(`${reason} while running: ${p.command}`));
    }
  }

  /**
   * Runs a shell script (busybox sh) in the guest: its exit code, stdout and stderr. The script is killed
   * in the guest after timeoutMs (exit code 137); if the agent does not answer within timeoutMs plus a
   * grace period, the guest is declared broken and this and later calls reject.
   */
  run(command: string, timeoutMs = 60_000): Promise<RunResult> {
    const next = this.queue.then(() => this.runNow(command, timeoutMs));
    this.queue = next.catch(() => {});
    return next;
  }

  /** Like run(), but rejects with GuestCommandError unless the exit code is 0; resolves to stdout. */
  async check(command: string, timeoutMs = 60_000): Promise<string> {
    const r = await this.run(command, timeoutMs);
    if (r.code !== 0) throw new GuestCommandError(command, r);
    return r.stdout;
  }

  private runNow(command: string, timeoutMs: number): Promise<RunResult> {
    if (this.broken) return Promise.reject(new Error(`guest unusable (${this.broken}); not running: ${command}`));
    const id = `c${++this.seq}`;
    const secs = Math.max(1, Math.ceil(timeoutMs / 1000));
    const graceMs = this.accel === 'tcg' ? 20_000 : 10_000;
    if (verbose) process.stderr.write(`[guest] -> ${command}\n`);
    return new Promise<RunResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(`the guest agent did not answer within ${timeoutMs + graceMs} ms`);
      }, timeoutMs + graceMs);
      this.pending = { id, command, stdout: [], stderr: [], section: 'wait', resolve, reject, timer };
      this.proc.stdin.write(`${id} ${secs} ${Buffer.from(command, 'utf8').toString('base64')}\n`);
    });
  }

  /** The kernel console so far (ttyS0). */
  async consoleLog(): Promise<string> {
    try {
      return await readFile(this.consoleLogPath, 'utf8');
    } catch {
      return '';
    }
  }

  async consoleTail(chars = 4000): Promise<string> {
    return (await this.consoleLog()).slice(-chars);
  }

  /** Kills QEMU at once (synchronous; for exit hooks). */
  kill() {
    if (!this.exited) this.proc.kill('SIGKILL');
  }

  /** Powers the guest off (bounded), kills QEMU if it lingers, and removes its temporary directory. */
  async shutdown(): Promise<void> {
    if (!this.exited) {
      // A guest whose agent is idle powers off at once; one that is busy or stuck is killed.
      const idle = !this.broken && !this.pending && !this.readyResolve;
      if (idle) this.proc.stdin.write(`poweroff 1 ${Buffer.from('poweroff -f', 'utf8').toString('base64')}\n`);
      const quit = idle && (await Promise.race([this.exitPromise.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 3000))]));
      if (!quit) {
        this.proc.kill('SIGKILL');
        await Promise.race([this.exitPromise, new Promise((r) => setTimeout(r, 5000))]);
      }
    }
    this.fail('the guest was shut down');
    if (this.watcherPid) {
      try {
        process.kill(this.watcherPid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
    live.delete(this);
    if (!process.env.THICKET_GUEST_KEEP) await rm(this.dir, { recursive: true, force: true });
  }

  async [Symbol.asyncDispose]() {
    await this.shutdown();
  }
}
