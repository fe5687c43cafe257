// One SSH connection to a hypervisor host (ssh2), with the host key checked against the pinned
// fingerprint before any command runs, and commands run with a timeout and capped output.
import { createHash } from 'node:crypto';
// ssh2 is CommonJS: Node's ESM loader gives it only as a default export.
import ssh2, { type ClientChannel } from 'ssh2';

export interface SshTarget {
  address: string;
  port: number;
  username: string;
  privateKey: string;
  /** "SHA256:<base64>" of the trusted host key; null: not pinned yet. */
  pinnedFingerprint: string | null;
  /** The host's id, for messages that tell the operator what to call. */
  hostId?: string;
}

export interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** A host key that is not pinned (and the caller did not ask to look at it anyway) or does not match. */
export class HostKeyError extends Error {
  readonly code: 'HOST_KEY_NOT_PINNED' | 'HOST_KEY_MISMATCH';
  readonly presented: string;
  readonly pinned: string | null;
  constructor(code: 'HOST_KEY_NOT_PINNED' | 'HOST_KEY_MISMATCH', presented: string, pinned: string | null, hostId?: string) {
    super(
      code === 'HOST_KEY_NOT_PINNED'
        ? `the host key (${presented}) is not pinned; check it and POST /api/v1/hosts/${hostId ?? '<host id>'}/trust {"fingerprint": "${presented}"}`
        : `the host presented key ${presented}, but ${pinned} is pinned: refusing to connect (the host was reinstalled, or someone is in between)`,
    );
    this.name = 'HostKeyError';
    this.code = code;
    this.presented = presented;
    this.pinned = pinned;
  }
}

/** A connection-level failure (refused, reset, timed out, authentication): worth a retry unless auth. */
export class SshConnectError extends Error {
  readonly transient: boolean;
  constructor(message: string, transient: boolean, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SshConnectError';
    this.transient = transient;
  }
}

/** The host's private key file cannot be read on this node: nothing was sent to the host. */
export class SshKeyUnreadableError extends SshConnectError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, false, options);
    this.name = 'SshKeyUnreadableError';
  }
}

export class ExecTimeoutError extends Error {
  readonly partial: ExecResult;
  constructor(timeoutMs: number, partial: ExecResult) {
    super(`the command did not finish within ${Math.round(timeoutMs / 1000)} s`);
    this.name = 'ExecTimeoutError';
    this.partial = partial;
  }
}

/** OpenSSH's fingerprint format: SHA256 of the key blob, base64 without padding. */
export function fingerprintOf(keyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`;
}

/** The algorithm name at the start of an SSH public key blob (string: uint32 length, bytes). */
export function keyTypeOf(keyBlob: Buffer): string {
  if (keyBlob.length < 4) return 'unknown';
  const n = keyBlob.readUInt32BE(0);
  return n > 0 && n < 64 && 4 + n <= keyBlob.length ? keyBlob.subarray(4, 4 + n).toString('latin1') : 'unknown';
}

const MAX_OUTPUT_BYTES = 1024 * 1024;

export class SshSession {
  readonly hostKey: { fingerprint: string; type: string };
  #client: ssh2.Client;
  #closed = false;
  #onClose: Array<() => void> = [];

  private constructor(client: ssh2.Client, hostKey: { fingerprint: string; type: string }) {
    this.#client = client;
    this.hostKey = hostKey;
    client.on('close', () => {
      this.#closed = true;
      for (const fn of this.#onClose.splice(0)) fn();
    });
    client.on('error', () => {
      this.#closed = true;
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  onClose(fn: () => void): void {
    if (this.#closed) fn();
    else this.#onClose.push(fn);
  }

  /**
   * Connects and authenticates with the private key. The host key must match the pinned fingerprint;
   * with `allowUnpinned` an unpinned host is let through (only to report its key), a mismatch never is.
   */
  static connect(target: SshTarget, options: { timeoutMs?: number; allowUnpinned?: boolean } = {}): Promise<SshSession> {
    const timeoutMs = options.timeoutMs ?? 15_000;
    return new Promise((resolve, reject) => {
      const client = new ssh2.Client();
      let presented: { fingerprint: string; type: string } | undefined;
      let keyError: HostKeyError | undefined;
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        client.end();
        reject(err);
      };
      client.on('ready', () => {
        if (settled) return;
        settled = true;
        resolve(new SshSession(client, presented!));
      });
      client.on('error', (err: Error & { level?: string; code?: string }) => {
        if (keyError) return fail(keyError);
        const auth = err.level === 'client-authentication';
        const msg = auth ? `authentication as "${target.username}" failed: the host does not accept the key` : `cannot connect to ${target.address}:${target.port}: ${err.message}`;
        fail(new SshConnectError(msg, !auth, { cause: err }));
      });
      client.on('close', () => fail(keyError ?? new SshConnectError(`the connection to ${target.address}:${target.port} closed during the handshake`, true)));
      try {
        client.connect({
          host: target.address,
          port: target.port,
          username: target.username,
          privateKey: target.privateKey,
          readyTimeout: timeoutMs,
          keepaliveInterval: 15_000,
          keepaliveCountMax: 3,
          hostVerifier: (key: Buffer) => {
            presented = { fingerprint: fingerprintOf(key), type: keyTypeOf(key) };
            if (target.pinnedFingerprint === null) {
              if (options.allowUnpinned) return true;
              keyError = new HostKeyError('HOST_KEY_NOT_PINNED', presented.fingerprint, null, target.hostId);
              return false;
            }
            if (presented.fingerprint === target.pinnedFingerprint) return true;
            keyError = new HostKeyError('HOST_KEY_MISMATCH', presented.fingerprint, target.pinnedFingerprint, target.hostId);
            return false;
          },
        });
      } catch (err) {
        fail(new SshConnectError(`cannot connect to ${target.address}:${target.port}: ${(err as Error).message}`, false, { cause: err }));
      }
    });
  }

  /** Runs a command; `stdin` is written and closed. Output beyond 1 MiB per stream is dropped. */
  exec(command: string, options: { stdin?: string; timeoutMs: number }): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      if (this.#closed) {
        reject(new SshConnectError('the SSH connection is closed', true));
        return;
      }
      this.#client.exec(command, (err, stream: ClientChannel) => {
        if (err) {
          reject(new SshConnectError(`cannot open an SSH channel: ${err.message}`, true, { cause: err }));
          return;
        }
        const out: Buffer[] = [];
        const errOut: Buffer[] = [];
        let outBytes = 0;
        let errBytes = 0;
        let code: number | null = null;
        let signal: string | null = null;
        let done = false;
        const result = (): ExecResult => ({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(errOut).toString('utf8') });
        const timer = setTimeout(() => {
          if (done) return;
          done = true;
          try {
            stream.signal('KILL');
          } catch {
            // not every server takes signals; closing the channel is what counts
          }
          stream.close();
          reject(new ExecTimeoutError(options.timeoutMs, result()));
        }, options.timeoutMs);
        stream.on('data', (b: Buffer) => {
          if (outBytes < MAX_OUTPUT_BYTES) out.push(b);
          outBytes += b.length;
        });
        stream.stderr.on('data', (b: Buffer) => {
          if (errBytes < MAX_OUTPUT_BYTES) errOut.push(b);
          errBytes += b.length;
        });
        stream.on('exit', (c: number | null, s?: string) => {
          code = c;
          signal = s ?? null;
        });
        stream.on('close', () => {
          clearTimeout(timer);
          if (done) return;
          done = true;
          if (code === null && signal === null && this.#closed) {
            reject(new SshConnectError('the SSH connection was lost while the command ran', true));
            return;
          }
          resolve(result());
        });
        stream.end(options.stdin ?? '');
      });
    });
  }

  close(): void {
    this.#closed = true;
    this.#client.end();
  }
}
