// Composition root: the only place that creates the database, services, job runner and servers and wires
// them together. main.ts adds process concerns (signals, exit codes); tests call startThicket directly.
import { mkdir, readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, type ServerType } from '@hono/node-server';
import type { Server } from 'node:http';
import { AppError } from './errors.ts';
import { createApp } from './api/app.ts';
import { loadAdminToken } from './api/auth.ts';
import { attachEventStream } from './api/event-stream.ts';
import { SessionStore } from './api/sessions.ts';
import { Metrics } from './api/metrics.ts';
import type { Config } from './config.ts';
import { EVENTS_CHANNEL, EventBus } from './control/events/event-bus.ts';
import { listen } from './db/notifications.ts';
import { JobRunner } from './control/jobs/job-runner.ts';
import { JobService } from './control/jobs/job.service.ts';
import { TemplateService } from './control/registry/template.service.ts';
import { MoveReplicaJob, PromoteReplicaJob, VerifyReplicaJob } from './control/replicas/replica-jobs.ts';
import { ReplicaService } from './control/replicas/replica.service.ts';
import { StoragePoolService } from './control/storage-pools/storage-pool.service.ts';
import { CloneService } from './control/clones/clone.service.ts';
import { DataplaneClient } from './dataplane/client.ts';
import { ExportService } from './control/exports/export.service.ts';
import { DesktopOps } from './control/desktop-pools/desktop-ops.ts';
import { DesktopPoolService } from './control/desktop-pools/desktop-pool.service.ts';
import { DeletePoolJob, RecomposePoolJob, RefreshPoolJob, ResizePoolJob } from './control/desktop-pools/pool-jobs.ts';
import { DesktopHooks } from './control/desktop-pools/desktop-hooks.ts';
import { HookRunner, type HookRunnerOptions } from './hooks/hook-runner.ts';
import { hostToken, verifyHostToken } from './hooks/host-token.ts';
import { loadSecretBox } from './hooks/secret-box.ts';
import { HookDesktopRestarter } from './control/schedules/desktop-restarter.ts';
import { ScheduleService } from './control/schedules/schedule.service.ts';
import { ScheduledRunJob } from './control/schedules/scheduled-run-job.ts';
import { Scheduler } from './control/schedules/scheduler.ts';
import { openDatabase, redactUrl } from './db/database.ts';
import { migrate } from './db/migrator.ts';
import { sql } from 'kysely';
import { lockDataDir } from './data-dir-lock.ts';
import { createLogger, type Logger } from './logger.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface ThicketInstance {
  url: string;
  httpPort: number;
  nvmePort: number;
  discoveryPort: number;
  /** Set only on the start that generated the admin token. */
  generatedAdminToken?: string;
  log: Logger;
  jobs: JobRunner;
  events: EventBus;
  /** Hooks on hypervisor hosts (restartDesktop and friends). */
  hooks: DesktopHooks;
  /** For maintenance sweeps in tests (recoverInterruptedResets, sweepExpiredUndo). */
  desktopPools: DesktopPoolService;
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /** Job runner tuning, mostly for tests. */
  jobRunner?: { pollIntervalMs?: number; staleAfterMs?: number; heartbeatIntervalMs?: number };
  /** Hook runner tuning (limits, timeouts, host-side paths), mostly for tests. */
  hooks?: Partial<Omit<HookRunnerOptions, 'templatesDir' | 'secrets' | 'target' | 'apiUrl' | 'hostToken'>>;
  /** How often the scheduler re-reads schedules changed by other processes, mostly for tests. */
  scheduleSyncIntervalMs?: number;
}

async function packageVersion(): Promise<string> {
  const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

export async function startThicket(config: Config, options: StartOptions = {}): Promise<ThicketInstance> {
  const log = options.logger ?? createLogger(config.logLevel);
  await mkdir(config.dataDir, { recursive: true });
  const unlock = config.databaseUrl ? async () => {} : await lockDataDir(config.dataDir);
  const cleanups: Array<() => Promise<void> | void> = [unlock];
  const closeAll = async () => {
    for (const fn of cleanups.splice(0).reverse()) await fn();
  };
  try {
    const database = await openDatabase(config.databaseUrl ? { url: config.databaseUrl } : { pgliteDir: path.join(config.dataDir, 'db') });
    cleanups.push(() => database.close());
    log.info({ database: database.kind === 'postgres' ? redactUrl(config.databaseUrl!) : path.join(config.dataDir, 'db') }, 'database opened');
    const migrated = await migrate(database.db);
    if (migrated.applied.length) log.info({ applied: migrated.applied }, 'migrations applied');
    const db = database.db;

    const { verifier, generatedToken } = await loadAdminToken(db, config.adminToken);
    const { box: secrets, generatedKeyFile } = await loadSecretBox(db, config.dataDir, config.secretKey);
    if (generatedKeyFile) log.warn({ file: generatedKeyFile }, 'generated the secret key that encrypts SSH private keys; back it up (or set THICKET_SECRET_KEY)');
    if (secrets.unusable) log.error({ problem: secrets.unusable }, 'stored secrets are unusable on this node: SSH hooks with stored keys and host tokens will fail here');
    const dataplane = new DataplaneClient({ replicaCacheBytes: config.replicaCacheBytes, journalBytes: config.journalBytes });
    dataplane.onBackgroundError = (message) => log.error({ message }, 'data plane background error');
    cleanups.push(() => dataplane.close());
    const logError = (err: unknown) => log.error({ err }, 'unexpected error');
    const events = new EventBus(db, logError);
    if (database.kind === 'postgres') {
      // Other nodes on this database publish events too; relay them to our WebSocket clients.
      events.enableNotify();
      const listener = await listen({
        url: config.databaseUrl!,
        channel: EVENTS_CHANNEL,
        onNotify: (seq) => events.remoteSeq(seq),
        onLost: () => events.listenLost(),
        onReconnect: () => events.catchUp(),
        log: logError,
      });
      cleanups.push(() => listener.close());
    }
    const jobs = new JobRunner(db, events, { log, ...options.jobRunner });
    const storagePools = new StoragePoolService(db, events);
    const templates = new TemplateService(db, events, config.dataDir, { maxImageBytes: config.maxImageBytes });
    const clones = new CloneService(db, events, dataplane);
    const exportsService = new ExportService(db, events, dataplane, config.nqnPrefix);
    const desktopOps = new DesktopOps(db, dataplane, events, config.nqnPrefix);
    // Hosts dial the target at its advertised address; the API URL is known once the server listens.
    let targetPort = 0;
    // Known before the server listens unless the port is picked at random (tests): jobs resumed at
    // start-up may install the libvirt hook before the server is up, and it must not get an empty URL.
    let apiUrl = config.httpPort ? `http://${config.httpHost.includes(':') ? `[${config.httpHost}]` : config.httpHost}:${config.httpPort}` : '';
    const hookRunner = new HookRunner({
      ...options.hooks,
      templatesDir: path.join(ROOT, 'templates'),
      secrets,
      target: () => ({ address: config.nvmeAdvertiseAddr ?? config.nvmeAddr, port: targetPort }),
      apiUrl: () => config.publicUrl ?? apiUrl,
      hostToken: (hostId) => hostToken(secrets, hostId),
      log: options.hooks?.log ?? log,
    });
    cleanups.push(() => hookRunner.close());
    if (!config.publicUrl && (config.httpHost === '0.0.0.0' || config.httpHost === '::')) {
      log.warn({ httpAddr: config.httpHost }, `THICKET_PUBLIC_URL is not set and the HTTP API listens on ${config.httpHost}: libvirt hosts would report VM events to an address they cannot reach; set THICKET_PUBLIC_URL`);
    }
    if (!config.nvmeAdvertiseAddr && (config.nvmeAddr === '0.0.0.0' || config.nvmeAddr === '::')) {
      log.warn({ nvmeAddr: config.nvmeAddr }, 'THICKET_NVME_ADVERTISE_ADDR is not set and the NVMe/TCP target listens on a wildcard address: discovery answers with the address each host dialled, but hooks refuse to attach until it is set');
    }
    exportsService.attachHooks(secrets, hookRunner);
    const desktopHooks = new DesktopHooks(desktopOps, hookRunner);
    desktopOps.hooks = desktopHooks;
    const desktopPools = new DesktopPoolService(desktopOps, () => jobs.kick());
    jobs.register(new ResizePoolJob(desktopOps));
    const refreshPoolJob = new RefreshPoolJob(desktopOps);
    jobs.register(refreshPoolJob);
    jobs.register(new RecomposePoolJob(desktopOps));
    jobs.register(new DeletePoolJob(desktopOps));
    const replicas = new ReplicaService(db, events, () => jobs.kick());
    const schedules = new ScheduleService(db, events, () => jobs.kick());
    jobs.register(
      new ScheduledRunJob({
        ops: desktopOps,
        resetter: refreshPoolJob,
        restarter: new HookDesktopRestarter(db, events, desktopHooks),
        promote: async (templateVersionId, storagePoolId) => (await replicas.promote({ templateVersionId, storagePoolId })).replica.id,
      }),
    );
    const deps = {
      db,
      events,
      versionImagePath: (t: string, v: string) => templates.versionImagePath(t, v),
      repointReplica: (replicaId: string, path: string) => dataplane.call('repointReplica', { replicaId, path }),
    };
    jobs.register(new PromoteReplicaJob(deps));
    jobs.register(new VerifyReplicaJob(deps));
    jobs.register(new MoveReplicaJob(deps));

    await storagePools.ensureDefaults(config.dataDir);
    storagePools.attachEngine({
      openPool: (poolId) => clones.openPool(poolId),
      closePool: (poolId) => dataplane.call('closePool', { poolId }),
      async usage() {
        const list = await dataplane.call('poolUsage', {});
        return new Map(list.map((u) => [u.poolId, u]));
      },
    });
    replicas.attachEngine({
      sharedBytesByReplica: () => clones.sharedBytesByReplica(),
      releaseReplica: (replicaId) => dataplane.call('releaseReplica', { replicaId }),
    });
    for (const report of await clones.openPools()) {
      if (report.failed.length) log.error({ poolId: report.poolId, failed: report.failed }, 'clones with damaged files are marked failed');
      if (report.removedOrphans.length) log.info({ poolId: report.poolId, clones: report.removedOrphans }, 'removed clone files that no clone row owns');
    }
    const ports = await dataplane.call('startTarget', {
      host: config.nvmeAddr,
      ioPort: config.nvmePort,
      discoveryPort: config.discoveryPort,
      advertiseAddress: config.nvmeAdvertiseAddr,
    });
    targetPort = ports.ioPort;
    const restored = await exportsService.restore();
    log.info({ address: config.nvmeAddr, ...ports, ...restored }, 'NVMe/TCP target listening');
    const undoTimer = setInterval(() => void desktopPools.sweepExpiredUndo().catch(logError), 5_000);
    const stuckTimer = setInterval(() => void desktopPools.recoverInterruptedResets().catch(logError), 60_000);
    cleanups.push(() => clearInterval(stuckTimer));
    cleanups.push(() => clearInterval(undoTimer));
    const usageTimer = setInterval(() => void clones.syncUsage().catch(logError), 5_000);
    cleanups.push(() => clearInterval(usageTimer));
    const sweptTemplates = await templates.sweepOrphans();
    if (sweptTemplates.length) log.info({ files: sweptTemplates }, 'removed template files left by an interrupted upload');
    // Jobs resume before the replica sweep, so partial files of jobs that will resume are kept.
    await jobs.start({ requeueAllRunning: database.kind === 'pglite' });
    cleanups.push(() => jobs.stop());
    const scheduler = new Scheduler(schedules, { syncIntervalMs: options.scheduleSyncIntervalMs, log, emit: (type, data) => events.emit(type, data) });
    schedules.onChange(() => void scheduler.sync());
    await scheduler.start();
    cleanups.push(() => scheduler.stop());
    const sweptReplicas = await replicas.sweepOrphans();
    if (sweptReplicas.length) log.info({ files: sweptReplicas }, 'removed replica files that no replica row owns');
    const pruneTimer = setInterval(() => void events.prune(100_000).catch(logError), 60_000);
    cleanups.push(() => clearInterval(pruneTimer));

    const metrics = new Metrics(db);
    const sessions = new SessionStore(db, verifier);
    const sessionTimer = setInterval(() => void sessions.prune().catch(logError), 10 * 60_000);
    cleanups.push(() => clearInterval(sessionTimer));
    const app = createApp({
      version: await packageVersion(),
      auth: verifier,
      sessions,
      webRoot: path.join(ROOT, 'web', 'dist'),
      metrics,
      events,
      storagePools,
      templates,
      replicas,
      clones,
      exports: exportsService,
      desktopPools,
      schedules,
      jobs: new JobService(db, jobs),
      verifyHostToken: (token) => {
        // Say why a host's token cannot be checked here instead of a bare "invalid token".
        if (secrets.unusable && token?.startsWith('thh.')) throw new AppError('UNAUTHORIZED', `host tokens cannot be checked on this node: ${secrets.unusable}`);
        return verifyHostToken(secrets, token);
      },
      logError,
      async health() {
        try {
          await sql`SELECT 1`.execute(db);
          return { ok: true, database: database.kind };
        } catch (err) {
          return { ok: false, database: database.kind, detail: (err as Error).message };
        }
      },
    });

    const server = await new Promise<ServerType>((resolve, reject) => {
      const s = serve({ fetch: app.fetch, hostname: config.httpHost, port: config.httpPort }, () => resolve(s));
      s.once('error', reject);
    });
    const stream = attachEventStream(server as Server, { auth: verifier, sessions, events, metrics, log: logError });
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          stream.close();
          (server as Server).closeAllConnections?.();
          server.close(() => resolve());
        }),
    );
    const port = (server.address() as AddressInfo).port;
    const host = config.httpHost.includes(':') ? `[${config.httpHost}]` : config.httpHost;
    const url = `http://${host}:${port}`;
    apiUrl = url;
    log.info({ url }, 'Thicket HTTP API listening');
    return { url, httpPort: port, nvmePort: ports.ioPort, discoveryPort: ports.discoveryPort, generatedAdminToken: generatedToken, log, jobs, events, hooks: desktopHooks, desktopPools, close: closeAll };
  } catch (err) {
    await closeAll().catch(() => {});
    throw err;
  }
}

export { ROOT };
