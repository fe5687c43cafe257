// LISTEN on a PostgreSQL channel with a dedicated connection (a pooled one would lose the LISTEN when
// returned). A dropped connection is re-established with backoff; `onReconnect` tells the caller that
// notifications may have been missed meanwhile, so it can catch up from the table itself.
import pg from 'pg';

export interface Listener {
  close(): Promise<void>;
}

export interface ListenOptions {
  url: string;
  channel: string;
  onNotify(payload: string): void;
  onReconnect(): void;
  log(err: unknown): void;
}

const MAX_BACKOFF_MS = 5000;

export async function listen(options: ListenOptions): Promise<Listener> {
  if (!/^[a-z_][a-z0-9_]*$/.test(options.channel)) throw new Error(`invalid channel name ${options.channel}`);
  let client: pg.Client | undefined;
  let closed = false;
  let backoff = 100;
  let timer: NodeJS.Timeout | undefined;

  const connect = async (): Promise<void> => {
    const c = new pg.Client({ connectionString: options.url });
    c.on('notification', (n) => {
      if (n.channel === options.channel && n.payload !== undefined) options.onNotify(n.payload);
    });
    c.on('error', (err) => {
      options.log(err);
      retry(c);
    });
    c.on('end', () => retry(c));
    await c.connect();
    await c.query(`LISTEN ${options.channel}`);
    client = c;
    backoff = 100;
  };

  const retry = (c: pg.Client): void => {
    if (closed || client !== c) return;
    client = undefined;
    c.end().catch(() => {});
    const attempt = (): void => {
      timer = undefined;
      if (closed) return;
      connect().then(options.onReconnect, (err) => {
        options.log(err);
        backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
        timer = setTimeout(attempt, backoff);
      });
    };
    timer = setTimeout(attempt, backoff);
  };

  await connect();
  return {
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      const c = client;
      client = undefined;
      await c?.end().catch(() => {});
    },
  };
}
