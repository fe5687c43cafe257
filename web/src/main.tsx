import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, setCsrfToken, setUnauthorizedHandler } from './api.ts';
import { events, type StreamStatus } from './events.ts';
import { interceptLinks, navigate, usePath } from './router.ts';
import type { SessionInfo } from './types.ts';
import { SignIn } from './pages/SignIn.tsx';
import { Dashboard } from './pages/Dashboard.tsx';
import { Templates } from './pages/Templates.tsx';
import { Replicas } from './pages/Replicas.tsx';
import { Pools } from './pages/Pools.tsx';
import { PoolPage } from './pages/PoolPage.tsx';
import { Hosts } from './pages/Hosts.tsx';
import { Jobs } from './pages/Jobs.tsx';
import './styles.css';

type Auth = { state: 'checking' } | { state: 'signed-out' } | { state: 'signed-in'; session: SessionInfo };

const NAV = [
  { href: '/', label: 'Dashboard' },
  { href: '/templates', label: 'Templates' },
  { href: '/replicas', label: 'Replicas' },
  { href: '/pools', label: 'Desktop pools' },
  { href: '/hosts', label: 'Hosts' },
  { href: '/jobs', label: 'Jobs' },
];

function Page(props: { path: string }) {
  const p = props.path;
  const pool = /^\/pools\/([0-9a-f-]{36})$/i.exec(p);
  if (pool) return <PoolPage id={pool[1]} />;
  switch (p) {
    case '/':
      return <Dashboard />;
    case '/templates':
      return <Templates />;
    case '/replicas':
      return <Replicas />;
    case '/pools':
      return <Pools />;
    case '/hosts':
      return <Hosts />;
    case '/jobs':
      return <Jobs />;
    default:
      return (
        <section>
          <h1>Not found</h1>
          <p>
            There is no page at <code>{p}</code>. <a href="/">Go to the dashboard</a>.
          </p>
        </section>
      );
  }
}

function StreamIndicator() {
  const [status, setStatus] = useState<StreamStatus>(events.status);
  useEffect(() => {
    const off = events.onStatus(setStatus);
    // The stream may have changed state between this render and the subscription.
    setStatus(events.status);
    return off;
  }, []);
  const text = status === 'live' ? 'Live' : status === 'stopped' ? 'Offline' : 'Reconnecting…';
  return (
    <span class={`stream stream-${status}`} role="status" aria-live="polite">
      {text}
    </span>
  );
}

function App() {
  const path = usePath();
  const [auth, setAuth] = useState<Auth>({ state: 'checking' });

  useEffect(() => {
    setUnauthorizedHandler(() => {
      setCsrfToken(undefined);
      events.stop();
      setAuth({ state: 'signed-out' });
    });
    api<SessionInfo>('GET', '/session').then(
      (session) => signedIn(session),
      () => setAuth({ state: 'signed-out' }),
    );
  }, []);

  function signedIn(session: SessionInfo): void {
    setCsrfToken(session.csrfToken);
    events.start();
    setAuth({ state: 'signed-in', session });
  }

  async function signOut(): Promise<void> {
    try {
      await api('DELETE', '/session');
    } finally {
      setCsrfToken(undefined);
      events.stop();
      setAuth({ state: 'signed-out' });
      navigate('/', true);
    }
  }

  if (auth.state === 'checking') return <p class="loading">Loading…</p>;
  if (auth.state === 'signed-out') return <SignIn onSignedIn={signedIn} />;
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Thicket</span>
        <nav aria-label="Main">
          <ul>
            {NAV.map((n) => (
              <li key={n.href}>
                <a href={n.href} aria-current={(n.href === '/' ? path === '/' : path.startsWith(n.href)) ? 'page' : undefined}>
                  {n.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <StreamIndicator />
        <button type="button" class="link" onClick={() => void signOut()}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        <Page path={path} />
      </main>
    </>
  );
}

const root = document.getElementById('app')!;
interceptLinks(root);
render(<App />, root);
