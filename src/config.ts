// Configuration comes only from environment variables. Every variable has a default and is validated once
// at start-up; a bad value stops the process with a message naming the variable.
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';

export interface Config {
  dataDir: string;
  databaseUrl: string | undefined;
  httpHost: string;
  httpPort: number;
  nvmeAddr: string;
  /** Address written into discovery log entries; never a wildcard. */
  nvmeAdvertiseAddr: string | undefined;
  nqnPrefix: string;
  nvmePort: number;
  discoveryPort: number;
  adminToken: string | undefined;
  logLevel: string;
  replicaCacheBytes: number;
  /** Size of each of a pool's two journal files. */
  journalBytes: number;
  /** Largest virtual size an imported image may have (bytes). */
  maxImageBytes: number;
  /** Key that encrypts stored SSH private keys; unset: <dataDir>/secret.key, generated on first start. */
  secretKey?: string | undefined;
  /** Base URL hypervisor hosts use to call the API (libvirt qemu hook); unset: http://<THICKET_HTTP_ADDR>. */
  publicUrl?: string | undefined;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function parsePort(name: string, raw: string): number {
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a port number (1-65535), got "${raw}"`);
  const port = Number(raw);
  if (port < 1 || port > 65535) throw new ConfigError(`${name} must be a port number (1-65535), got "${raw}"`);
  return port;
}

function parseHost(name: string, raw: string): string {
  // An IPv4/IPv6 literal or a host name; brackets around IPv6 are accepted and stripped.
  const host = raw.startsWith('[') && raw.endsWith(']') ? raw.slice(1, -1) : raw;
  if (!/^[A-Za-z0-9.:_-]+$/.test(host) || host.length > 253) {
    throw new ConfigError(`${name} must be an IP address or host name, got "${raw}"`);
  }
  return host;
}

function parseHostPort(name: string, raw: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(raw);
  if (!m) throw new ConfigError(`${name} must look like HOST:PORT (for example 127.0.0.1:8080), got "${raw}"`);
  return { host: parseHost(name, m[1]), port: parsePort(name, m[2]) };
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const get = (name: string, fallback: string): string => {
    const value = env[name];
    return value === undefined || value === '' ? fallback : value;
  };

  const dataDir = path.resolve(get('THICKET_DATA_DIR', './data'));

  const databaseUrl = env.DATABASE_URL === undefined || env.DATABASE_URL === '' ? undefined : env.DATABASE_URL;
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError(`DATABASE_URL must be a postgres:// or postgresql:// URL, got "${databaseUrl}"`);
  }

  const http = parseHostPort('THICKET_HTTP_ADDR', get('THICKET_HTTP_ADDR', '127.0.0.1:8080'));
  const nvmeAddr = parseHost('THICKET_NVME_ADDR', get('THICKET_NVME_ADDR', '127.0.0.1'));
  const nvmePort = parsePort('THICKET_NVME_PORT', get('THICKET_NVME_PORT', '4420'));
  const advertiseRaw = env.THICKET_NVME_ADVERTISE_ADDR;
  let nvmeAdvertiseAddr = advertiseRaw ? parseHost('THICKET_NVME_ADVERTISE_ADDR', advertiseRaw) : undefined;
  if (nvmeAdvertiseAddr === '0.0.0.0' || nvmeAdvertiseAddr === '::') {
    throw new ConfigError('THICKET_NVME_ADVERTISE_ADDR must be an address hosts can dial, not a wildcard');
  }
  // The discovery log's TRADDR is an address literal matching its ADRFAM; hosts do not resolve names there.
  if (nvmeAdvertiseAddr !== undefined && isIP(nvmeAdvertiseAddr) === 0) {
    throw new ConfigError(`THICKET_NVME_ADVERTISE_ADDR must be an IPv4 or IPv6 address (discovery log entries carry no host names), got "${advertiseRaw}"`);
  }
  // Listening on a wildcard (or a host name) without an advertised address: each discovery answer uses
  // the address the host connected to (never 0.0.0.0).
  if (nvmeAdvertiseAddr === undefined && nvmeAddr !== '0.0.0.0' && nvmeAddr !== '::' && isIP(nvmeAddr) !== 0) nvmeAdvertiseAddr = nvmeAddr;
  const nqnPrefix = get('THICKET_NQN_PREFIX', 'nqn.2026-11.io.thicket');
  if (!/^nqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*[a-z0-9]$/i.test(nqnPrefix)) {
    throw new ConfigError(`THICKET_NQN_PREFIX must look like nqn.yyyy-mm.reverse.domain, got "${nqnPrefix}"`);
  }
  const discoveryPort = parsePort('THICKET_DISCOVERY_PORT', get('THICKET_DISCOVERY_PORT', '8009'));

  const adminToken = env.THICKET_ADMIN_TOKEN === undefined || env.THICKET_ADMIN_TOKEN === '' ? undefined : env.THICKET_ADMIN_TOKEN;
  if (adminToken !== undefined && adminToken.length < 16) {
    throw new ConfigError('THICKET_ADMIN_TOKEN must be at least 16 characters long');
  }

  const logLevel = get('THICKET_LOG_LEVEL', 'info');
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`THICKET_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  }

  const cacheRaw = get('THICKET_REPLICA_CACHE_BYTES', String(256 * 1024 * 1024));
  if (!/^\d+$/.test(cacheRaw) || Number(cacheRaw) > 2 ** 46) {
    throw new ConfigError(`THICKET_REPLICA_CACHE_BYTES must be a number of bytes (0 disables the cache), got "${cacheRaw}"`);
  }
  const replicaCacheBytes = Number(cacheRaw);

  const journalRaw = get('THICKET_JOURNAL_BYTES', String(32 * 1024 * 1024));
  if (!/^\d+$/.test(journalRaw) || Number(journalRaw) < 1024 * 1024 || Number(journalRaw) > 2 ** 34) {
    throw new ConfigError(`THICKET_JOURNAL_BYTES must be a number of bytes of at least 1048576, got "${journalRaw}"`);
  }
  const journalBytes = Number(journalRaw);

  const maxImageRaw = get('THICKET_MAX_IMAGE_BYTES', String(2 * 1024 ** 4));
  if (!/^\d+$/.test(maxImageRaw) || Number(maxImageRaw) < 4096 || Number(maxImageRaw) > 2 ** 52) {
    throw new ConfigError(`THICKET_MAX_IMAGE_BYTES must be a number of bytes of at least 4096, got "${maxImageRaw}"`);
  }
  const maxImageBytes = Number(maxImageRaw);

  const secretKey = env.THICKET_SECRET_KEY === undefined || env.THICKET_SECRET_KEY === '' ? undefined : env.THICKET_SECRET_KEY.trim();
  if (secretKey !== undefined && !/^([0-9a-fA-F]{64}|[A-Za-z0-9+/_-]{43}=?)$/.test(secretKey)) {
    throw new ConfigError('THICKET_SECRET_KEY must be 32 bytes written as 64 hex digits or base64');
  }
  const publicUrl = env.THICKET_PUBLIC_URL === undefined || env.THICKET_PUBLIC_URL === '' ? undefined : env.THICKET_PUBLIC_URL.replace(/\/+$/, '');
  if (publicUrl !== undefined && !/^https?:\/\/[A-Za-z0-9.:\[\]_-]+(\/[A-Za-z0-9._~\/-]*)?$/.test(publicUrl)) {
    throw new ConfigError(`THICKET_PUBLIC_URL must be an http:// or https:// URL, got "${env.THICKET_PUBLIC_URL}"`);
  }

  return {
    dataDir,
    databaseUrl,
    httpHost: http.host,
    httpPort: http.port,
    nvmeAddr,
    nvmeAdvertiseAddr,
    nqnPrefix,
    nvmePort,
    discoveryPort,
    adminToken,
    logLevel,
    replicaCacheBytes,
    journalBytes,
    maxImageBytes,
    secretKey,
    publicUrl,
  };
}

/** The variables, defaults and meanings, for the README and `--help`. */
export const CONFIG_VARIABLES: ReadonlyArray<{ name: string; defaultValue: string; meaning: string }> = [
  { name: 'THICKET_DATA_DIR', defaultValue: './data', meaning: 'where the embedded database, templates and default storage pools live' },
  { name: 'DATABASE_URL', defaultValue: '(unset)', meaning: 'PostgreSQL URL; unset means the embedded PGlite database in <data>/db' },
  { name: 'THICKET_HTTP_ADDR', defaultValue: '127.0.0.1:8080', meaning: 'HTTP API, WebSocket events and web UI' },
  { name: 'THICKET_NVME_ADDR', defaultValue: '127.0.0.1', meaning: 'address the NVMe/TCP target listens on' },
  { name: 'THICKET_NVME_ADVERTISE_ADDR', defaultValue: '(listen address)', meaning: 'address put in discovery log entries for hosts to dial; with a wildcard listen address and none set, the address the host connected to' },
  { name: 'THICKET_NQN_PREFIX', defaultValue: 'nqn.2026-11.io.thicket', meaning: 'subsystem NQNs are <prefix>:<name>' },
  { name: 'THICKET_NVME_PORT', defaultValue: '4420', meaning: 'NVMe/TCP I/O port' },
  { name: 'THICKET_DISCOVERY_PORT', defaultValue: '8009', meaning: 'NVMe/TCP discovery port' },
  { name: 'THICKET_ADMIN_TOKEN', defaultValue: '(unset)', meaning: 'admin bearer token; unset means one is generated on first start, printed once and stored only as a hash' },
  { name: 'THICKET_REPLICA_CACHE_BYTES', defaultValue: '268435456', meaning: 'RAM for the shared replica block cache (all clones of all replicas)' },
  { name: 'THICKET_JOURNAL_BYTES', defaultValue: '33554432', meaning: 'size of each of the two preallocated journal files per storage pool' },
  { name: 'THICKET_SECRET_KEY', defaultValue: '(unset)', meaning: 'key (64 hex digits) that encrypts hosts\' SSH private keys in the database; unset means <data>/secret.key, generated on first start. Set it when several nodes share one PostgreSQL' },
  { name: 'THICKET_PUBLIC_URL', defaultValue: '(http://<THICKET_HTTP_ADDR>)', meaning: 'base URL hypervisor hosts use to report VM events (the libvirt qemu hook)' },
  { name: 'THICKET_LOG_LEVEL', defaultValue: 'info', meaning: 'pino log level' },
];

/**
 * Makes sure THICKET_DATA_DIR is (or can be made) a directory this process can write, before anything
 * else touches it: a path under /proc, a regular file or a read-only place is a configuration error with
 * the variable's name, not a raw errno later (or a start that never finishes).
 */
export function prepareDataDir(dataDir: string): void {
  const fail = (why: string) => new ConfigError(`THICKET_DATA_DIR=${dataDir} ${why}`);
  try {
    mkdirParents(dataDir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw fail(code === 'EEXIST' || code === 'ENOTDIR' ? 'is not a directory (a file is in the way)' : `cannot be created: ${(err as Error).message}`);
  }
  let st;
  try {
    st = statSync(dataDir);
  } catch (err) {
    throw fail(`cannot be read: ${(err as Error).message}`);
  }
  if (!st.isDirectory()) throw fail('is not a directory');
  const probe = path.join(dataDir, `.write-test-${process.pid}`);
  try {
    writeFileSync(probe, '');
    rmSync(probe, { force: true });
  } catch (err) {
    throw fail(`is not writable: ${(err as Error).message}`);
  }
}

/**
 * mkdir -p one level at a time. Node's recursive mkdirSync never returns for a path such as /proc/nope
 * (mkdir answers ENOENT although the parent exists, and it retries the parent forever).
 */
function mkdirParents(dir: string): void {
  const missing: string[] = [];
  let at = path.resolve(dir);
  for (let i = 0; i < 256 && !existsSync(at); i++) {
    missing.push(at);
    const parent = path.dirname(at);
    if (parent === at) break;
    at = parent;
  }
  for (const d of missing.reverse()) mkdirSync(d);
}
