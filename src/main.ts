// Process entry point: configuration, start, signals.
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

main().catch((err) => {
  process.stderr.write(`thicket: failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
