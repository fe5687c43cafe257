// Small accessible building blocks shared by the pages.
import { cloneElement, isValidElement, type ComponentChildren, type VNode } from 'preact';
import { useEffect, useRef } from 'preact/hooks';
import { bytes, percent } from '../format.ts';
import type { StoragePool } from '../types.ts';

export function ProgressBar(props: { label: string; value: number; max: number; text?: string }) {
  const pct = percent(props.value, props.max);
  return (
    <div class="progress">
      <div
        class="progress-track"
        role="progressbar"
        aria-label={props.label}
        aria-valuemin={0}
        aria-valuemax={props.max}
        aria-valuenow={props.value}
        aria-valuetext={props.text ?? `${pct}%`}
      >
        <div class="progress-fill" style={{ width: `${pct}%` }} />
      </div>
      <span class="progress-text">{props.text ?? `${pct}%`}</span>
    </div>
  );
}

/** A gauge (capacity, usage) rather than progress towards an end. */
export function Meter(props: { label: string; value: number; max: number; text: string }) {
  const pct = percent(props.value, props.max);
  return (
    <div class="progress">
      <div class={`progress-track meter${pct >= 90 ? ' high' : ''}`} role="meter" aria-label={props.label} aria-valuemin={0} aria-valuemax={props.max} aria-valuenow={props.value} aria-valuetext={props.text}>
        <div class="progress-fill" style={{ width: `${pct}%` }} />
      </div>
      <span class="progress-text">{props.text}</span>
    </div>
  );
}

export function Alert(props: { message: string | undefined; children?: ComponentChildren }) {
  if (!props.message) return null;
  return (
    <div class="alert" role="alert">
      {props.message}
      {props.children}
    </div>
  );
}

let fieldIds = 0;

/**
 * A labelled field: <label for> names the control with exactly its label text (a label wrapping a
 * <select> would also take in the selected option's text), and the hint describes it through
 * aria-describedby instead of becoming part of the name.
 */
export function Field(props: { label: string; children: ComponentChildren; hint?: string }) {
  const ids = useRef<{ control: string; hint: string } | undefined>(undefined);
  ids.current ??= { control: `field-${++fieldIds}`, hint: `field-${fieldIds}-hint` };
  const { control: controlId, hint: hintId } = ids.current;
  let control = props.children;
  if (isValidElement(props.children)) {
    const own = props.children.props as { id?: string; 'aria-describedby'?: string };
    control = cloneElement(props.children as VNode<{ id?: string; 'aria-describedby'?: string }>, {
      id: own.id ?? controlId,
      'aria-describedby': [own['aria-describedby'], props.hint ? hintId : undefined].filter(Boolean).join(' ') || undefined,
    });
  }
  const forId = isValidElement(props.children) ? ((props.children.props as { id?: string }).id ?? controlId) : undefined;
  return (
    <div class="field">
      <label class="field-label" for={forId}>
        {props.label}
      </label>
      {control}
      {props.hint ? (
        <span class="field-hint" id={hintId}>
          {props.hint}
        </span>
      ) : null}
    </div>
  );
}

/**
 * Asks before a destructive action. A native modal <dialog>: focus moves into it, Escape cancels and
 * the rest of the page is inert while it is open. It exists only while open, so a closed one never
 * shares a label or a button name with the page.
 */
/**
 * A modal confirmation. `returnFocusId`: the id of the button that opened it. Pages hide that button while
 * the dialog is open (one "Delete" at a time), so on closing focus goes back to it by id once it is
 * rendered again; a keyboard user continues where they were.
 */
export function ConfirmDialog(props: { open: boolean; title: string; message: ComponentChildren; confirmLabel: string; onConfirm: () => void; onCancel: () => void; returnFocusId?: string }) {
  if (!props.open) return null;
  return <OpenDialog {...props} />;
}

function OpenDialog(props: { title: string; message: ComponentChildren; confirmLabel: string; onConfirm: () => void; onCancel: () => void; returnFocusId?: string }) {
  const ref = useRef<HTMLDialogElement>(null);
  const returnFocusId = props.returnFocusId;
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    return () => {
      d?.close();
      if (returnFocusId) setTimeout(() => document.getElementById(returnFocusId)?.focus(), 0);
    };
  }, []);
  return (
    <dialog ref={ref} class="confirm" aria-labelledby="confirm-title" onCancel={(e) => { e.preventDefault(); props.onCancel(); }}>
      <h2 id="confirm-title">{props.title}</h2>
      <div>{props.message}</div>
      <div class="actions">
        <button type="button" onClick={props.onCancel} autofocus>
          Cancel
        </button>
        <button type="button" class="danger" onClick={props.onConfirm}>
          {props.confirmLabel}
        </button>
      </div>
    </dialog>
  );
}

export function StateBadge(props: { state: string }) {
  return <span class={`badge state-${props.state}`}>{props.state}</span>;
}

/** The storage pool picker of the promote and create-pool forms: name, tier and free space. */
export function StoragePoolField(props: { pools: StoragePool[]; value: string; onChange: (id: string) => void }) {
  return (
    <Field label="Storage pool">
      <select name="storagePoolId" required value={props.value} onChange={(e) => props.onChange(e.currentTarget.value)}>
        <option value="">Choose a storage pool…</option>
        {props.pools.map((p) => (
          <option key={p.id} value={p.id}>
            {p.name} ({p.tier}, {bytes(p.usage.freeBytes)} free)
          </option>
        ))}
      </select>
    </Field>
  );
}
