// A real OpenSSH server (Debian's openssh-server) on a free 127.0.0.1 port for hook tests: generated
// host key, one authorized client key, root login by key only. `replaceHostKey()` restarts it on the same
// port with a new host key (a reinstalled host, or someone in between).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './thicket-process.ts';

const run = promisify(execFile);
export const SSHD = '/usr/sbin/sshd';

export interface TestSshd {
  address: string;
  port: number;
  username: string;
  dir: string;
  /** The client's private key (OpenSSH format) and its path. */
  clientKey: string;
  clientKeyPath: string;
  /** "SHA256:…" of the current host key, as ssh-keygen -l prints it. */
  hostKeyFingerprint: string;
  replaceHostKey(): Promise<string>;
  /** sshd's stderr (-e), for failures. */
  log(): string;
  stop(): Promise<void>;
}

async function keygen(file: string): Promise<void> {
  await rm(file, { force: true });
  await rm(`${file}.pub`, { force: true });
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'thicket-test', '-f', file]);
}

export async function fingerprintOfFile(pubFile: string): Promise<string> {
  const { stdout } = await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', pubFile]);
  const m = /(SHA256:[A-Za-z0-9+/]{43})/.exec(stdout);
  if (!m) throw new Error(`cannot read a fingerprint from: ${stdout}`);
  return m[1];
}

async function waitListening(port: number, child: ChildProcess, logText: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (let i = 0; i < 200 && Date.now() < deadline; i++) {
    if (child.exitCode !== null) throw new Error(`sshd exited with ${child.exitCode}: ${logText()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`sshd did not listen on 127.0.0.1:${port}: ${logText()}`);
}

export async function startSshd(): Promise<TestSshd> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'thicket-sshd-'));
  const port = await freePort();
  const hostKey = path.join(dir, 'host_ed25519');
  const clientKeyPath = path.join(dir, 'client_ed25519');
  await keygen(hostKey);
  await keygen(clientKeyPath);
  await writeFile(path.join(dir, 'authorized_keys'), await readFile(`${clientKeyPath}.pub`));
  const config = path.join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
      'StrictModes no',
      'UsePAM no',
      'PermitRootLogin prohibit-password',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'MaxSessions 32',
      'MaxStartups 32',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  // sshd insists on its privilege-separation directory.
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  let logText = '';
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (b) => (logText = (logText + b).slice(-8000)));
    await waitListening(port, child, () => logText);
  };
  const stopChild = async () => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    // The per-connection processes (its children, each in a session of its own) end too, as when a host
    // is reinstalled: established connections do not outlive the server.
    const { stdout } = await run('ps', ['-o', 'pid=', '--ppid', String(c.pid)]).catch(() => ({ stdout: '' }));
    const pids = [c.pid!, ...stdout.split(/\s+/).filter(Boolean).map(Number)];
    const signal = (s: NodeJS.Signals) => {
      for (const pid of pids) {
        try {
          process.kill(pid, s);
        } catch {
          // gone already
        }
      }
    };
    signal('SIGTERM');
    const t = setTimeout(() => signal('SIGKILL'), 5_000);
    await exited;
    clearTimeout(t);
  };
  await start();
  const sshd: TestSshd = {
    address: '127.0.0.1',
    port,
    username: os.userInfo().username,
    dir,
    clientKey: await readFile(clientKeyPath, 'utf8'),
    clientKeyPath,
    hostKeyFingerprint: await fingerprintOfFile(`${hostKey}.pub`),
    async replaceHostKey() {
      await stopChild();
      await keygen(hostKey);
      sshd.hostKeyFingerprint = await fingerprintOfFile(`${hostKey}.pub`);
      await start();
      return sshd.hostKeyFingerprint;
    },
    log: () => logText,
    async stop() {
      await stopChild();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return sshd;
}
