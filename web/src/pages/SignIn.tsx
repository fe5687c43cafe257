import { useState } from 'preact/hooks';
import { api, errorText } from '../api.ts';
import { Alert, Field } from '../components/widgets.tsx';
import type { SessionInfo } from '../types.ts';

export function SignIn(props: { onSignedIn: (s: SessionInfo) => void }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);

  async function submit(e: Event): Promise<void> {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      // The token goes to the server once; what the browser keeps is an HttpOnly cookie.
      const session = await api<SessionInfo>('POST', '/session', { token: token.trim() });
      setToken('');
      props.onSignedIn(session);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main class="signin" id="main">
      <h1>Sign in to Thicket</h1>
      <form onSubmit={(e) => void submit(e)}>
        <Field label="Token" hint="The admin token printed on Thicket's first start, or an API token.">
          <input type="password" name="token" autocomplete="current-password" required value={token} onInput={(e) => setToken(e.currentTarget.value)} />
        </Field>
        <Alert message={error} />
        <button type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
    </main>
  );
}
