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
  /** The connection dropped: notifications may be missed until onReconnect. */
  onLost?(): void;
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

  const connect = async (): Promise<boolean> => {
    // A connection that only listens sends nothing: TCP keepalive notices a peer that vanished.
    const c = new pg.Client({ connectionString: options.url, keepAlive: true });
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
    if (closed) {
      // close() ran while this connection was being made.
      await c.end().catch(() => {});
      return false;
    }
    client = c;
    backoff = 100;
    return true;
  };

  const retry = (c: pg.Client): void => {
    if (closed || client !== c) return;
    client = undefined;
    options.onLost?.();
    c.end().catch(() => {});
    const attempt = (): void => {
      timer = undefined;
      if (closed) return;
      connect().then((live) => {
        if (live) options.onReconnect();
      }, (err) => {
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
