// "Get models…" on the pack's loader nodes: the catalogue (what each model is for, its size and licence, whether it
// is installed), downloads through the pack's route on ComfyUI's server with progress in the page, and the
// dropdowns refreshed when a download completes. The same catalogue as `pae models list` / `pae models get`.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const LOADERS = ["PAE_LoadModel", "PAE_LoadSAOInstruct", "PAE_LoadCLAP", "PAE_LoadMusicGen", "PAE_LoadAPAdapter"];
const EVENT = "pae.models";
let dialog = null;

function addStyle() {
  if (document.getElementById("pae-models-style")) return;
  const style = document.createElement("style");
  style.id = "pae-models-style";
  style.textContent = `
    .pae-models { position: fixed; z-index: 10000; left: 50%; top: 8%; transform: translateX(-50%);
      width: min(760px, 94vw); max-height: 84vh; overflow: auto; padding: 12px 16px; border-radius: 8px;
      background: var(--comfy-menu-bg, #202020); color: var(--input-text, #ddd); border: 1px solid #555;
      font: 13px sans-serif; box-shadow: 0 8px 32px #000a; }
    .pae-models h3 { margin: 0 0 8px 0; font-size: 15px; }
    .pae-models .pae-close { float: right; cursor: pointer; }
    .pae-model { border-top: 1px solid #444; padding: 8px 0; }
    .pae-model .pae-head { display: flex; gap: 8px; align-items: baseline; }
    .pae-model .pae-name { font-weight: bold; }
    .pae-model .pae-state { font-size: 11px; padding: 1px 6px; border-radius: 8px; background: #444; }
    .pae-model .pae-state.installed { background: #2d5a2d; }
    .pae-model .pae-state.damaged, .pae-model .pae-state.error { background: #6a2d2d; }
    .pae-model .pae-sub { color: var(--descrip-text, #999); font-size: 12px; margin: 2px 0; }
    .pae-model button { margin-left: auto; cursor: pointer; }
    .pae-model progress { width: 100%; height: 8px; }
    .pae-model pre { white-space: pre-wrap; font-size: 11px; margin: 4px 0; }`;
  document.head.append(style);
}

function size(mb) {
  return mb >= 1024 ? `${(mb / 1024).toFixed(1)} GiB` : `${Math.round(mb)} MiB`;
}

async function refreshDropdowns() {
  // The frontend's own refresh (the "R" key): every node's combo lists are fetched again.
  if (typeof app.refreshComboInNodes === "function") await app.refreshComboInNodes();
}

function row(model) {
  const box = document.createElement("div");
  box.className = "pae-model";
  box.dataset.name = model.name;
  const head = document.createElement("div");
  head.className = "pae-head";
  const name = document.createElement("span");
  name.className = "pae-name";
  name.textContent = model.name;
  const state = document.createElement("span");
  state.className = `pae-state ${model.state.replace(" ", "-")}`;
  state.textContent = model.state;
  const sizeText = document.createElement("span");
  sizeText.className = "pae-sub";
  sizeText.textContent = `≈ ${size(model.size_mb)}${model.gated ? " · gated" : ""}${model.by_hand ? " · by hand" : ""}`;
  const button = document.createElement("button");
  button.textContent = model.state === "installed" ? "Installed" : model.by_hand ? "How to get" : "Download";
  button.disabled = model.state === "installed" || model.job?.state === "running";
  button.onclick = () => startDownload(model.name, box);
  head.append(name, state, sizeText, button);
  const purpose = document.createElement("div");
  purpose.className = "pae-sub";
  purpose.textContent = `${model.purpose}. Licence: ${model.licence}.`;
  const details = document.createElement("pre");
  details.textContent = model.state === "partly installed" || model.state === "damaged" ? model.details.join("\n") : "";
  const bar = document.createElement("progress");
  bar.hidden = true;
  const message = document.createElement("pre");
  box.append(head, purpose, details, bar, message);
  if (model.job) showJob(box, model.job);
  return box;
}

function showJob(box, job) {
  const bar = box.querySelector("progress");
  const message = box.querySelectorAll("pre")[1];
  const state = box.querySelector(".pae-state");
  const button = box.querySelector("button");
  if (job.state === "running") {
    bar.hidden = false;
    bar.max = job.total || 1;
    bar.value = job.done || 0;
    message.textContent = job.file ? `${job.file}: ${(job.done / 2 ** 20).toFixed(1)} / ${(job.total / 2 ** 20).toFixed(1)} MiB`
      : job.message || "starting…";
    state.textContent = "downloading";
    button.disabled = true;
    return;
  }
  bar.hidden = true;
  state.textContent = job.state === "done" ? "installed" : job.state;
  state.className = `pae-state ${job.state === "done" ? "installed" : job.state.replace(" ", "-")}`;
  message.textContent = [job.message, ...(job.steps || [])].filter(Boolean).join("\n");
  button.disabled = job.state === "done";
  button.textContent = job.state === "done" ? "Installed" : "Try again";
}

async function startDownload(name, box) {
  const response = await api.fetchApi("/pae/models/get", { method: "POST", body: JSON.stringify({ name }),
    headers: { "Content-Type": "application/json" } });
  const answer = await response.json();
  if (!response.ok) {
    box.querySelectorAll("pre")[1].textContent = answer.error || `HTTP ${response.status}`;
    return;
  }
  if (answer.job) showJob(box, answer.job);
}

async function openDialog(nodeType) {
  addStyle();
  dialog?.remove();
  dialog = document.createElement("div");
  dialog.className = "pae-models";
  const close = document.createElement("span");
  close.className = "pae-close";
  close.textContent = "✕";
  close.title = "Close";
  close.onclick = () => { dialog.remove(); dialog = null; };
  const title = document.createElement("h3");
  title.textContent = "Get models (Prompt Audio Edit)";
  const hint = document.createElement("div");
  hint.className = "pae-sub";
  hint.textContent = "Downloads go into ComfyUI's models folder at pinned revisions; gated models need `hf auth login` "
    + "(or HF_TOKEN) where ComfyUI runs. The same as `pae models get NAME` in a terminal.";
  dialog.append(close, title, hint);
  document.body.append(dialog);
  const response = await api.fetchApi("/pae/models");
  const { models } = await response.json();
  const mine = models.filter((m) => m.nodes.includes(nodeType));
  const others = models.filter((m) => !m.nodes.includes(nodeType));
  for (const model of [...mine, ...others]) dialog.append(row(model));
}

api.addEventListener(EVENT, async (event) => {
  const job = event.detail;
  const box = dialog?.querySelector(`.pae-model[data-name="${CSS.escape(job.name)}"]`);
  if (box) showJob(box, job);
  if (job.state === "done" || job.state === "needs files") await refreshDropdowns();
});

app.registerExtension({
  name: "prompt_audio_edit.get_models",
  async nodeCreated(node) {
    const type = node.comfyClass ?? node.type;
    if (!LOADERS.includes(type)) return;
    const widget = node.addWidget("button", "Get models…", null, () => openDialog(type));
    widget.serialize = false; // not a value: saved workflows keep their widget order
    widget.options = { ...(widget.options || {}), serialize: false };
  },
});
