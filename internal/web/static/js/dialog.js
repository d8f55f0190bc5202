// A confirmation dialog for destructive actions, on the native <dialog>
// element: modal, focus moves in (to the first field, else to Cancel, the
// safe choice), Escape cancels, and focus returns to the button that
// opened it. The action runs while the dialog stays open; its error is
// shown in the dialog (role=alert), verbatim, so the user can retry or
// cancel.

import { h, networkMessage, ApiError } from './util.js';

let seq = 0;

/**
 * Asks for confirmation, then runs action(values).
 * opts: title, text, confirmLabel, fields: [{name, label, type: "select"
 * | "text", options: [[value, label]…], value, hint}], action (async,
 * throws to refuse), returnFocus (an element to focus when the opener is
 * gone). Resolves to the action's result, or null when cancelled.
 */
export function confirmAction(opts) {
  const id = `confirm-${++seq}`;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const inputs = {};
    const fieldEls = (opts.fields || []).map((f) => {
      const fid = `${id}-${f.name}`;
      let input;
      if (f.type === 'select') {
        input = h('select', { id: fid, name: f.name, 'data-testid': `confirm-field-${f.name}` },
          f.options.map(([v, label]) => h('option', { value: v, selected: v === f.value }, label)));
      } else {
        input = h('input', { id: fid, name: f.name, type: 'text', value: f.value || '', autocomplete: 'off', 'data-testid': `confirm-field-${f.name}` });
      }
      inputs[f.name] = input;
      return h('div', { class: 'field' }, h('label', { for: fid, text: f.label }), input,
        f.hint ? h('p', { class: 'hint', text: f.hint }) : null);
    });
    const error = h('p', { class: 'message error', role: 'alert', 'data-testid': 'confirm-error' });
    const cancel = h('button', { type: 'button', 'data-testid': 'confirm-cancel', text: 'Cancel' });
    const ok = h('button', { type: 'submit', class: 'danger', 'data-testid': 'confirm-ok', text: opts.confirmLabel || 'Confirm' });
    const form = h('form', { method: 'dialog' },
      h('h2', { id: `${id}-title`, text: opts.title }),
      h('p', { id: `${id}-text`, text: opts.text }),
      fieldEls, error,
      h('div', { class: 'actions' }, cancel, ok));
    const dialog = h('dialog', { 'aria-labelledby': `${id}-title`, 'aria-describedby': `${id}-text`, 'data-testid': 'confirm-dialog' }, form);
    let result = null;
    let busy = false;

    cancel.addEventListener('click', () => dialog.close());
    dialog.addEventListener('cancel', (ev) => {
      if (busy) ev.preventDefault();
    });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (busy) return;
      busy = true;
      ok.disabled = cancel.disabled = true;
      error.replaceChildren();
      const values = {};
      for (const [k, el] of Object.entries(inputs)) values[k] = el.value;
      try {
        result = await opts.action(values);
        if (result === undefined || result === null) result = true;
        busy = false;
        dialog.close();
      } catch (err) {
        busy = false;
        ok.disabled = cancel.disabled = false;
        error.textContent = networkMessage(err);
        if (err instanceof ApiError) error.dataset.code = err.code;
        ok.focus();
      }
    });
    dialog.addEventListener('close', () => {
      dialog.remove();
      const back = opener && opener.isConnected && opener !== document.body ? opener : opts.returnFocus;
      if (back && back.isConnected) back.focus();
      resolve(result);
    });
    document.body.append(dialog);
    dialog.showModal();
    const first = fieldEls.length ? Object.values(inputs)[0] : cancel;
    first.focus();
  });
}

/** Durations offered for denials and revocations. */
export const durationOptions = [
  ['1h', '1 hour'],
  ['24h', '1 day'],
  ['168h', '7 days'],
  ['720h', '30 days'],
];

/** Seconds of a duration option ("24h" → 86400). */
export function durationSeconds(v) {
  const m = /^(\d+)h$/.exec(v);
  return m ? Number(m[1]) * 3600 : 86400;
}
