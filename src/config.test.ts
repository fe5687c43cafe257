import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { CONFIG_VARIABLES, ConfigError, loadConfig, prepareDataDir } from './config.ts';

function configError(env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('loadConfig defaults', () => {
  const config = loadConfig({});

  it('puts the data directory at ./data resolved against the working directory', () => {
    expect(config.dataDir).toBe(path.resolve('./data'));
    expect(path.isAbsolute(config.dataDir)).toBe(true);
  });

  it('uses the embedded database when DATABASE_URL is unset', () => {
    expect(config.databaseUrl).toBeUndefined();
  });

  it('listens for HTTP on 127.0.0.1:8080', () => {
    expect(config.httpHost).toBe('127.0.0.1');
    expect(config.httpPort).toBe(8080);
  });

  it('serves NVMe/TCP on 127.0.0.1 port 4420 with discovery on 8009', () => {
    expect(config.nvmeAddr).toBe('127.0.0.1');
    expect(config.nvmePort).toBe(4420);
    expect(config.discoveryPort).toBe(8009);
  });

  it('leaves the admin token unset so one is generated', () => {
    expect(config.adminToken).toBeUndefined();
  });

  it('logs at info level', () => {
    expect(config.logLevel).toBe('info');
  });

  it('advertises the NVMe listen address and names subsystems under nqn.2026-11.io.thicket', () => {
    expect(config.nvmeAdvertiseAddr).toBe('127.0.0.1');
    expect(config.nqnPrefix).toBe('nqn.2026-11.io.thicket');
  });

  it('gives the replica cache 256 MiB and each journal file 32 MiB', () => {
    expect(config.replicaCacheBytes).toBe(256 * 1024 * 1024);
    expect(config.journalBytes).toBe(32 * 1024 * 1024);
  });

  it('advertises nothing fixed when listening on a wildcard address', () => {
    expect(loadConfig({ THICKET_NVME_ADDR: '0.0.0.0' }).nvmeAdvertiseAddr).toBeUndefined();
    expect(loadConfig({ THICKET_NVME_ADDR: '[::]' }).nvmeAdvertiseAddr).toBeUndefined();
    // A listen host name is not advertised: each host is told the address it reached.
    expect(loadConfig({ THICKET_NVME_ADDR: 'localhost' }).nvmeAdvertiseAddr).toBeUndefined();
  });

  it('treats empty variables like unset ones', () => {
    const empty = loadConfig({
      THICKET_DATA_DIR: '',
      DATABASE_URL: '',
      THICKET_HTTP_ADDR: '',
      THICKET_NVME_ADDR: '',
      THICKET_NVME_PORT: '',
      THICKET_DISCOVERY_PORT: '',
      THICKET_ADMIN_TOKEN: '',
      THICKET_LOG_LEVEL: '',
      THICKET_NVME_ADVERTISE_ADDR: '',
      THICKET_NQN_PREFIX: '',
      THICKET_REPLICA_CACHE_BYTES: '',
      THICKET_JOURNAL_BYTES: '',
    });
    expect(empty).toEqual(config);
  });

  it('documents every variable, and each documented literal default is the real default', () => {
    const names = CONFIG_VARIABLES.map((v) => v.name);
    expect(new Set(names).size).toBe(names.length);
    for (const name of ['THICKET_DATA_DIR', 'DATABASE_URL', 'THICKET_HTTP_ADDR', 'THICKET_NVME_ADDR', 'THICKET_NVME_PORT', 'THICKET_DISCOVERY_PORT', 'THICKET_ADMIN_TOKEN', 'THICKET_LOG_LEVEL']) {
      expect(names).toContain(name);
    }
    for (const v of CONFIG_VARIABLES) {
      if (v.defaultValue.startsWith('(')) continue; // "(unset)" and similar: no literal value
      expect(loadConfig({ [v.name]: v.defaultValue }), v.name).toEqual(config);
    }
  });
});

describe('loadConfig accepts valid values', () => {
  it('reads every variable', () => {
    const config = loadConfig({
      THICKET_DATA_DIR: '/var/lib/thicket',
      DATABASE_URL: 'postgresql://thicket:secret@db.example:5432/thicket',
      THICKET_HTTP_ADDR: '0.0.0.0:9090',
      THICKET_NVME_ADDR: '10.0.0.5',
      THICKET_NVME_PORT: '14420',
      THICKET_DISCOVERY_PORT: '18009',
      THICKET_ADMIN_TOKEN: 'a-long-enough-token',
      THICKET_LOG_LEVEL: 'debug',
      THICKET_NVME_ADVERTISE_ADDR: '10.0.0.9',
      THICKET_NQN_PREFIX: 'nqn.2030-01.com.example',
      THICKET_REPLICA_CACHE_BYTES: '0',
      THICKET_JOURNAL_BYTES: '1048576',
    });
    expect(config).toMatchObject({
      dataDir: '/var/lib/thicket',
      databaseUrl: 'postgresql://thicket:secret@db.example:5432/thicket',
      httpHost: '0.0.0.0',
      httpPort: 9090,
      nvmeAddr: '10.0.0.5',
      nvmePort: 14420,
      discoveryPort: 18009,
      adminToken: 'a-long-enough-token',
      logLevel: 'debug',
      nvmeAdvertiseAddr: '10.0.0.9',
      nqnPrefix: 'nqn.2030-01.com.example',
      replicaCacheBytes: 0,
      journalBytes: 1048576,
    });
  });

  it('accepts postgres:// URLs and bracketed IPv6 HTTP addresses', () => {
    const config = loadConfig({ DATABASE_URL: 'postgres://localhost/thicket', THICKET_HTTP_ADDR: '[::1]:8080', THICKET_NVME_ADDR: '[fd00::1]' });
    expect(config.databaseUrl).toBe('postgres://localhost/thicket');
    expect(config.httpHost).toBe('::1');
    expect(config.httpPort).toBe(8080);
    expect(config.nvmeAddr).toBe('fd00::1');
  });

  it('accepts a host name in THICKET_HTTP_ADDR and the port bounds 1 and 65535', () => {
    expect(loadConfig({ THICKET_HTTP_ADDR: 'localhost:1' })).toMatchObject({ httpHost: 'localhost', httpPort: 1 });
    expect(loadConfig({ THICKET_NVME_PORT: '65535' }).nvmePort).toBe(65535);
  });

  it('accepts an admin token of exactly 16 characters', () => {
    expect(loadConfig({ THICKET_ADMIN_TOKEN: '0123456789abcdef' }).adminToken).toBe('0123456789abcdef');
  });
});

describe('loadConfig rejects invalid values with a ConfigError naming the variable', () => {
  const cases: Array<[string, NodeJS.ProcessEnv, string]> = [
    ['a non-numeric NVMe port', { THICKET_NVME_PORT: 'abc' }, 'THICKET_NVME_PORT'],
    ['NVMe port 0', { THICKET_NVME_PORT: '0' }, 'THICKET_NVME_PORT'],
    ['NVMe port 65536', { THICKET_NVME_PORT: '65536' }, 'THICKET_NVME_PORT'],
    ['a negative discovery port', { THICKET_DISCOVERY_PORT: '-1' }, 'THICKET_DISCOVERY_PORT'],
    ['a fractional discovery port', { THICKET_DISCOVERY_PORT: '80.5' }, 'THICKET_DISCOVERY_PORT'],
    ['an HTTP address without a port', { THICKET_HTTP_ADDR: '127.0.0.1' }, 'THICKET_HTTP_ADDR'],
    ['an HTTP address with a port out of range', { THICKET_HTTP_ADDR: '127.0.0.1:70000' }, 'THICKET_HTTP_ADDR'],
    ['an HTTP address with port 0', { THICKET_HTTP_ADDR: '127.0.0.1:0' }, 'THICKET_HTTP_ADDR'],
    ['an HTTP address with a non-numeric port', { THICKET_HTTP_ADDR: 'localhost:http' }, 'THICKET_HTTP_ADDR'],
    ['an HTTP address with an invalid host', { THICKET_HTTP_ADDR: 'bad host!:8080' }, 'THICKET_HTTP_ADDR'],
    ['an HTTP address that is a URL', { THICKET_HTTP_ADDR: 'http://127.0.0.1:8080' }, 'THICKET_HTTP_ADDR'],
    ['an NVMe address with invalid characters', { THICKET_NVME_ADDR: 'no/slashes' }, 'THICKET_NVME_ADDR'],
    ['a mysql DATABASE_URL', { DATABASE_URL: 'mysql://localhost/thicket' }, 'DATABASE_URL'],
    ['a DATABASE_URL without a scheme', { DATABASE_URL: 'localhost:5432/thicket' }, 'DATABASE_URL'],
    ['a 15-character admin token', { THICKET_ADMIN_TOKEN: '0123456789abcde' }, 'THICKET_ADMIN_TOKEN'],
    ['an unknown log level', { THICKET_LOG_LEVEL: 'verbose' }, 'THICKET_LOG_LEVEL'],
    ['an upper-case log level', { THICKET_LOG_LEVEL: 'INFO' }, 'THICKET_LOG_LEVEL'],
    ['a wildcard advertise address', { THICKET_NVME_ADVERTISE_ADDR: '0.0.0.0' }, 'THICKET_NVME_ADVERTISE_ADDR'],
    ['an advertise address with invalid characters', { THICKET_NVME_ADVERTISE_ADDR: 'a b' }, 'THICKET_NVME_ADVERTISE_ADDR'],
    ['a host name as the advertise address (discovery entries carry address literals)', { THICKET_NVME_ADVERTISE_ADDR: 'thicket.example' }, 'THICKET_NVME_ADVERTISE_ADDR'],
    ['an NQN prefix without a date', { THICKET_NQN_PREFIX: 'nqn.io.thicket' }, 'THICKET_NQN_PREFIX'],
    ['a non-numeric replica cache size', { THICKET_REPLICA_CACHE_BYTES: '256M' }, 'THICKET_REPLICA_CACHE_BYTES'],
    ['a journal smaller than 1 MiB', { THICKET_JOURNAL_BYTES: '1048575' }, 'THICKET_JOURNAL_BYTES'],
    ['a negative journal size', { THICKET_JOURNAL_BYTES: '-1' }, 'THICKET_JOURNAL_BYTES'],
  ];

  it.each(cases)('%s', (_label, env, variable) => {
    const err = configError(env);
    expect(err.name).toBe('ConfigError');
    expect(err.message).toContain(variable);
  });

  it('quotes the rejected value in the message (except for the secret admin token)', () => {
    expect(configError({ THICKET_NVME_PORT: 'abc' }).message).toContain('"abc"');
    expect(configError({ THICKET_LOG_LEVEL: 'verbose' }).message).toContain('"verbose"');
    expect(configError({ THICKET_ADMIN_TOKEN: 'short-secret' }).message).not.toContain('short-secret');
  });
});

describe('prepareDataDir', () => {
  it('creates missing parents and accepts a writable directory', () => {
    const base = mkdtempSync(path.join(os.tmpdir(), 'thicket-datadir-'));
    try {
      prepareDataDir(path.join(base, 'a', 'b'));
      expect(statSync(path.join(base, 'a', 'b')).isDirectory()).toBe(true);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  it('names THICKET_DATA_DIR when the path is a file, cannot be created (even under /proc, where mkdir -p never returns) or is not writable', () => {
    const base = mkdtempSync(path.join(os.tmpdir(), 'thicket-datadir-'));
    try {
      const file = path.join(base, 'file');
      writeFileSync(file, 'x');
      for (const dir of [file, path.join(file, 'sub'), '/proc/thicket-nope', '/sys/thicket-nope']) {
        expect(() => prepareDataDir(dir), dir).toThrow(ConfigError);
        expect(() => prepareDataDir(dir), dir).toThrow(/THICKET_DATA_DIR/);
      }
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
