import { useState } from 'preact/hooks';
import { api, upload } from '../api.ts';
import { Alert, ConfirmDialog, Field, ProgressBar } from '../components/widgets.tsx';
import { bytes, percent, when } from '../format.ts';
import { useAction, useResource } from '../resource.ts';
import type { Template, TemplateVersion } from '../types.ts';

const FORMATS = ['raw', 'qcow2', 'vmdk', 'vhdx', 'vdi'];

function CreateTemplate(props: { onCreated: (t: Template) => void }) {
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const action = useAction();
  return (
    <form
      class="panel"
      onSubmit={(e) => {
        e.preventDefault();
        void action.run(async () => {
          const t = await api<Template>('POST', '/templates', { name: name.trim(), ...(description.trim() ? { description: description.trim() } : {}) });
          setName('');
          setDescription('');
          props.onCreated(t);
        });
      }}
    >
      <h2 id="new-template">New template</h2>
      <div class="row">
        <Field label="Name">
          <input name="name" required maxLength={64} value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </Field>
        <Field label="Description">
          <input name="description" value={description} onInput={(e) => setDescription(e.currentTarget.value)} />
        </Field>
      </div>
      <Alert message={action.error} />
      <button type="submit" disabled={action.busy}>
        Create template
      </button>
    </form>
  );
}

function UploadVersion(props: { templates: Template[]; selected: string; onSelect: (id: string) => void; onUploaded: () => void }) {
  const [file, setFile] = useState<File | undefined>();
  const [format, setFormat] = useState('raw');
  const [progress, setProgress] = useState<{ sent: number; total: number } | undefined>();
  const [done, setDone] = useState<TemplateVersion | undefined>();
  const action = useAction();
  return (
    <form
      class="panel"
      aria-labelledby="upload-version"
      onSubmit={(e) => {
        e.preventDefault();
        if (!file || !props.selected) return;
        setDone(undefined);
        setProgress({ sent: 0, total: file.size });
        void action.run(async () => {
          let v: TemplateVersion;
          try {
            v = await upload<TemplateVersion>(`/templates/${props.selected}/versions?format=${encodeURIComponent(format)}`, file, (sent, total) => setProgress({ sent, total }));
          } catch (err) {
            // A refused upload must not leave a bar that reads as finished: the alert says what failed.
            setProgress(undefined);
            throw err;
          }
          setDone(v);
          props.onUploaded();
        });
      }}
    >
      <h2 id="upload-version">Upload a version</h2>
      <div class="row">
        <Field label="Template">
          <select name="template" required value={props.selected} onChange={(e) => props.onSelect(e.currentTarget.value)}>
            <option value="">Choose a template…</option>
            {props.templates.map((t) => (
              <option key={t.id} value={t.id}>
                {t.name}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Image file">
          <input
            type="file"
            name="image"
            required
            onChange={(e) => {
              const f = e.currentTarget.files?.[0];
              setFile(f);
              // Preselect the format the file name says (still changeable): a qcow2 uploaded as raw would
              // become a replica of the container's bytes, not of the disk inside it.
              const ext = f?.name.split('.').pop()?.toLowerCase();
              const guess = ext === 'img' || ext === 'iso' ? 'raw' : FORMATS.find((x) => x === ext);
              if (guess) setFormat(guess);
            }}
          />
        </Field>
        <Field label="Format">
          <select name="format" value={format} onChange={(e) => setFormat(e.currentTarget.value)}>
            {FORMATS.map((f) => (
              <option key={f} value={f}>
                {f}
              </option>
            ))}
          </select>
        </Field>
      </div>
      {/* In percent (aria-valuemax 100), so "reaches 100 %" reads the same for any file size. */}
      {progress ? (
        <ProgressBar label="Upload progress" value={percent(progress.sent, progress.total)} max={100} text={`${percent(progress.sent, progress.total)}% (${bytes(progress.sent)} of ${bytes(progress.total)})`} />
      ) : null}
      {done ? (
        <p role="status">
          Uploaded version {done.version} ({bytes(done.sizeBytes)}).
        </p>
      ) : null}
      <Alert message={action.error} />
      <button type="submit" disabled={action.busy || !file || !props.selected}>
        Upload
      </button>
    </form>
  );
}

export function Templates() {
  const list = useResource(
    async () => {
      const templates = await api<Template[]>('GET', '/templates');
      return Promise.all(templates.map((t) => api<Template>('GET', `/templates/${t.id}`)));
    },
    [],
    ['template.'],
  );
  const [selected, setSelected] = useState('');
  const [deleting, setDeleting] = useState<Template | undefined>();
  const del = useAction();
  const templates = list.data ?? [];
  const chosen = selected || (templates.length === 1 ? templates[0].id : '');

  return (
    <section>
      <h1>Templates</h1>
      <Alert message={list.error} />
      <div class="two">
        <CreateTemplate
          onCreated={(t) => {
            setSelected(t.id);
            list.reload();
          }}
        />
        <UploadVersion templates={templates} selected={chosen} onSelect={setSelected} onUploaded={list.reload} />
      </div>
      <Alert message={del.error} />
      {templates.length === 0 && !list.loading ? <p class="muted">No templates yet.</p> : null}
      {templates.map((t) => (
        <article class="panel" key={t.id} aria-labelledby={`t-${t.id}`}>
          <header class="row spread">
            <h2 id={`t-${t.id}`}>{t.name}</h2>
            {deleting ? null : (
              <button type="button" id={`delete-template-${t.id}`} class="danger" onClick={() => setDeleting(t)}>
                Delete
              </button>
            )}
          </header>
          {t.description ? <p>{t.description}</p> : null}
          <table>
            <caption>Versions of {t.name}</caption>
            <thead>
              <tr>
                <th scope="col">Version</th>
                <th scope="col">Size</th>
                <th scope="col">Source format</th>
                <th scope="col">SHA-256</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {(t.versions ?? []).map((v) => (
                <tr key={v.id}>
                  <td>v{v.version}</td>
                  <td>{bytes(v.sizeBytes)}</td>
                  <td>{v.format}</td>
                  <td>
                    <code title={v.sha256}>{v.sha256.slice(0, 16)}…</code>
                  </td>
                  <td>{when(v.createdAt)}</td>
                </tr>
              ))}
              {(t.versions ?? []).length === 0 ? (
                <tr>
                  <td colSpan={5} class="muted">
                    No versions yet: upload one.
                  </td>
                </tr>
              ) : null}
            </tbody>
          </table>
        </article>
      ))}
      <ConfirmDialog
        open={deleting !== undefined}
        returnFocusId={deleting ? `delete-template-${deleting.id}` : undefined}
        title="Delete template?"
        message={<p>Template {deleting?.name} and all its versions will be deleted. Replicas already promoted from it stay.</p>}
        confirmLabel="Delete"
        onCancel={() => setDeleting(undefined)}
        onConfirm={() => {
          const t = deleting!;
          setDeleting(undefined);
          void del.run(async () => {
            await api('DELETE', `/templates/${t.id}`);
            list.reload();
          });
        }}
      />
    </section>
  );
}
