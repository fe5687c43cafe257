// Process entry point: configuration, start, signals.
import { existsSync } from 'node:fs';
import { ConfigError, loadConfig } from './config.ts';
import { startThicket } from './thicket.ts';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`thicket: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  await buildWebUiIfNeeded();
  const thicket = await startThicket(config);
  if (thicket.generatedAdminToken) {
    // Printed once: only its hash is stored.
    process.stdout.write(
      `\nGenerated admin token (shown only this once; store it now):\n\n  ${thicket.generatedAdminToken}\n\n` +
        `Use it as: Authorization: Bearer <token>\n\n`,
    );
  }
  process.stdout.write(`Thicket is running at ${thicket.url} (data directory ${config.dataDir})\n`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    thicket.log.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    thicket.close().then(
      () => process.exit(0),
      (err) => {
        thicket.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
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
