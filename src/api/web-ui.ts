// Serves the built single-page application (web/dist) at `/`. Paths that are not files fall back to
// index.html so the UI's own routes (/pools/…) survive a reload. The API, /healthz and /metrics are
// matched before this and never reach it.
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { Hono } from 'hono';
import { serveStatic } from '@hono/node-server/serve-static';

// Everything the UI loads is its own: scripts, styles and the event WebSocket on this origin.
const CSP = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

export function webUi(root: string | undefined): Hono {
  const app = new Hono();
  app.use('*', async (c, next) => {
    await next();
    c.header('Content-Security-Policy', CSP);
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('Referrer-Policy', 'no-referrer');
  });
  if (!root) return app;
  const indexPath = path.join(root, 'index.html');
  // File names under assets/ carry a content hash, so browsers may keep them forever.
  const assets = serveStatic({ root, onFound: (_p, c) => void c.header('Cache-Control', 'public, max-age=31536000, immutable') });
  const files = serveStatic({ root });
  app.get('*', async (c, next) => {
    if (c.req.path.startsWith('/api/')) return next();
    // A path with a file extension is a file or nothing; any other path is a page of the application.
    if (path.extname(c.req.path)) {
      // c.req.path is already decoded; decoding again would throw on a literal "%".
      const file = path.resolve(root, `.${c.req.path}`);
      const found = file.startsWith(path.resolve(root) + path.sep) && (await stat(file).then((s) => s.isFile(), () => false));
      if (!found) return c.text('not found', 404);
      return (c.req.path.startsWith('/assets/') ? assets : files)(c, next);
    }
    c.header('Cache-Control', 'no-cache');
    // Read per request: a rebuild replaces the hashed asset names index.html points at.
    const html = await readFile(indexPath, 'utf8').catch(() => undefined);
    if (html === undefined) return c.text('The web UI is not built. Run `npm run build:web` (npm start does it when needed).\n', 503);
    return c.html(html);
  });
  return app;
}
