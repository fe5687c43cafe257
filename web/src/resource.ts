// Loads a resource from the API and keeps it fresh: events whose type starts with one of `watch`
// trigger a reload (coalesced, so a burst of events costs one request), as does a stream resync.
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { errorText } from './api.ts';
import { events } from './events.ts';

const RELOAD_COALESCE_MS = 250;

export interface Resource<T> {
  data: T | undefined;
  error: string | undefined;
  loading: boolean;
  reload: () => void;
}

export function useResource<T>(load: () => Promise<T>, deps: unknown[], watch: string[] = []): Resource<T> {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [loading, setLoading] = useState(true);
  const generation = useRef(0);
  const timer = useRef<number | undefined>(undefined);

  const reload = useCallback(() => {
    const g = ++generation.current;
    setLoading(true);
    load().then(
      (d) => {
        if (g !== generation.current) return;
        setData(d);
        setError(undefined);
        setLoading(false);
      },
      (err) => {
        if (g !== generation.current) return;
        setError(errorText(err));
        setLoading(false);
      },
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);

  useEffect(() => {
    reload();
    const schedule = () => {
      if (timer.current !== undefined) return;
      timer.current = window.setTimeout(() => {
        timer.current = undefined;
        reload();
      }, RELOAD_COALESCE_MS);
    };
    const offEvent = watch.length ? events.subscribe((e) => { if (watch.some((w) => e.type.startsWith(w))) schedule(); }) : () => {};
    const offResync = events.onResync(schedule);
    return () => {
      offEvent();
      offResync();
      clearTimeout(timer.current);
      timer.current = undefined;
      generation.current++;
    };
  }, [reload]);

  return { data, error, loading, reload };
}

/** Runs an action, exposing its error for a role="alert" and a busy flag for buttons. */
export function useAction(): { busy: boolean; error: string | undefined; run: (fn: () => Promise<unknown>) => Promise<boolean>; clear: () => void } {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  const run = useCallback(async (fn: () => Promise<unknown>) => {
    setBusy(true);
    setError(undefined);
    try {
      await fn();
      return true;
    } catch (err) {
      setError(errorText(err));
      return false;
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, run, clear: () => setError(undefined) };
}
