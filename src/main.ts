// Process entry point: configuration, start, signals.
import { existsSync } from 'node:fs';
import { ConfigError, loadConfig, prepareDataDir } from './config.ts';
import { startThicket, type ThicketInstance } from './thicket.ts';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
    prepareDataDir(config.dataDir);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`thicket: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  // Signals are handled from the start: a stop asked for while Thicket is still starting waits for the
  // start to finish, then shuts down cleanly (the default action would kill it half-started). This also
  // closes the window between printing "running" and registering the handlers, in which a supervisor
  // reacting to that line could kill the process outright.
  let thicket: ThicketInstance | undefined;
  let stopping: string | undefined;
  const stop = (signal: string) => {
    if (stopping) {
      // A second signal while still starting: the operator does not want to wait.
      if (!thicket) process.exit(1);
      return;
    }
    stopping = signal;
    if (!thicket) return;
    const t = thicket;
    t.log.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    t.close().then(
      () => process.exit(0),
      (err) => {
        t.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));

  await buildWebUiIfNeeded();
  thicket = await startThicket(config);
  if (thicket.generatedAdminToken) {
    // Printed once: only its hash is stored.
    process.stdout.write(
      `\nGenerated admin token (shown only this once; store it now):\n\n  ${thicket.generatedAdminToken}\n\n` +
        `Use it as: Authorization: Bearer <token>\n\n`,
    );
  }
  process.stdout.write(`Thicket is running at ${thicket.url} (data directory ${config.dataDir})\n`);
  if (stopping) {
    const signal = stopping;
    stopping = undefined;
    stop(signal);
  }
}

/**
 * A checkout started with `node src/main.ts` (not `npm start`) still gets a current web UI. Where the
 * sources are absent or Vite is not installed (the production image carries web/dist only), whatever was
 * built is served.
 */
async function buildWebUiIfNeeded(): Promise<void> {
  if (!existsSync(new URL('../web/src', import.meta.url))) return;
  try {
    const { buildWeb } = await import('../scripts/build-web.ts');
    if (await buildWeb({ quiet: true })) process.stdout.write('thicket: built the web UI (web/dist)\n');
  } catch (err) {
    process.stderr.write(`thicket: the web UI was not rebuilt (${err instanceof Error ? err.message.split('\n')[0] : String(err)}); serving web/dist as it is\n`);
  }
}

main().catch((err) => {
  process.stderr.write(`thicket: failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
