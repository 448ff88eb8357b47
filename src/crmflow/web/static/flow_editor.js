// The flow editor: CodeMirror over the form's textarea. As one types (400 ms after the last
// key), the text goes to /flows/validate; its problems are marked at their line (lint gutter
// and underline) and listed under the editor. The form still posts the textarea: this script
// only copies the editor's text into it on submit.
import { EditorView, basicSetup } from "codemirror";
import { yaml } from "@codemirror/lang-yaml";
import { linter, lintGutter } from "@codemirror/lint";

const DELAY_MS = 400;

function csrfToken() {
  try {
    return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "";
  } catch (error) {
    return "";
  }
}

function describe(problem) {
  let text = problem.line ? `Line ${problem.line}: ` : "";
  if (problem.path) {
    text += `${problem.path}: `;
  }
  text += problem.message;
  if (problem.hint) {
    text += ` (${problem.hint})`;
  }
  return text;
}

function showList(view, answer, failure) {
  const list = document.getElementById("flow-problems-list");
  const status = document.getElementById("flow-problems-status");
  const title = document.getElementById("flow-problems-title");
  list.replaceChildren();
  if (failure) {
    title.textContent = "Problems";
    status.textContent = failure;
    return;
  }
  const items = [...answer.problems, ...answer.warnings];
  const count = answer.problems.length + (answer.not_listed || 0);
  title.textContent = count ? `Problems (${count})` : "Problems";
  if (answer.valid) {
    status.textContent = answer.warnings.length
      ? "Valid, with warnings that do not stop a save."
      : "No problems: the flow can be saved.";
  } else {
    status.textContent = "Fix these, then save.";
  }
  for (const problem of items) {
    const item = document.createElement("li");
    item.dataset.line = problem.line || "";
    if (problem.severity === "warning") {
      item.className = "warning";
    }
    if (problem.line) {
      const go = document.createElement("button");
      go.type = "button";
      go.className = "secondary outline problem-go";
      go.textContent = describe(problem);
      go.addEventListener("click", () => {
        const line = view.state.doc.line(Math.min(problem.line, view.state.doc.lines));
        view.dispatch({ selection: { anchor: line.from }, scrollIntoView: true });
        view.focus();
      });
      item.append(go);
    } else {
      item.textContent = describe(problem);
    }
    list.append(item);
  }
  if (answer.not_listed) {
    const more = document.createElement("li");
    more.textContent = `... and ${answer.not_listed} more`;
    list.append(more);
  }
}

function diagnostics(doc, answer) {
  const out = [];
  for (const problem of [...answer.problems, ...answer.warnings]) {
    // A problem without a line (one about the whole document) is marked on the first line.
    const line = doc.line(Math.min(Math.max(problem.line || 1, 1), doc.lines));
    const from = Math.min(line.from + Math.max((problem.column || 1) - 1, 0), line.to);
    out.push({
      from,
      to: line.to,
      severity: problem.severity === "warning" ? "warning" : "error",
      message: describe(problem),
    });
  }
  return out;
}

function validator(url) {
  let current = null;
  return async (view) => {
    if (current) {
      current.abort();
    }
    current = new AbortController();
    const text = view.state.doc.toString();
    let answer;
    try {
      const response = await fetch(url, {
        method: "POST",
        body: text,
        signal: current.signal,
        credentials: "same-origin",
        headers: { "Content-Type": "text/plain; charset=utf-8", "X-CSRF-Token": csrfToken() },
      });
      if (!response.ok) {
        const reason =
          response.status === 413
            ? "The document is larger than the server takes."
            : `The check failed (${response.status}); reload the page if it goes on.`;
        showList(view, null, reason);
        return [];
      }
      answer = await response.json();
    } catch (error) {
      if (error.name !== "AbortError") {
        showList(view, null, "The server could not be reached to check the flow.");
      }
      return [];
    }
    showList(view, answer, null);
    document.getElementById("flow-editor").dataset.checked = answer.valid ? "valid" : "invalid";
    return diagnostics(view.state.doc, answer);
  };
}

function start() {
  const textarea = document.getElementById("flow-source");
  const holder = document.getElementById("flow-editor");
  const form = document.getElementById("flow-form");
  if (!textarea || !holder || !form) {
    return;
  }
  const view = new EditorView({
    doc: textarea.value,
    parent: holder,
    extensions: [
      basicSetup,
      yaml(),
      lintGutter(),
      linter(validator(textarea.dataset.validate), { delay: DELAY_MS }),
      EditorView.contentAttributes.of({
        "aria-labelledby": "flow-source-label",
        "aria-describedby": "flow-editor-help",
      }),
      EditorView.theme({
        "&": { maxHeight: "70vh", fontSize: "0.9rem" },
        ".cm-scroller": { overflow: "auto", minHeight: "20rem" },
      }),
    ],
  });
  textarea.hidden = true;
  holder.hidden = false;
  form.addEventListener("submit", () => {
    textarea.value = view.state.doc.toString();
  });
  holder.dataset.ready = "true";
  window.flowEditor = view;
}

start();
