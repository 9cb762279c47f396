// Prompt Audio Edit in the browser: players on the pack's output nodes (every clip of a batch) and the
// Before / After node's paired players with an A/B switch. Images (spectrograms, attention maps) come
// through ComfyUI's own image preview, from the "images" the nodes return.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PANEL = "pae_players";
const ROW_HEIGHT = 62;

function fileUrl(file) {
  const query = new URLSearchParams({
    filename: file.filename,
    subfolder: file.subfolder ?? "",
    type: file.type ?? "output",
  });
  return api.apiURL(`/view?${query}`);
}

function addStyle() {
  if (document.getElementById("pae-style")) return;
  const style = document.createElement("style");
  style.id = "pae-style";
  style.textContent = `
    .pae-panel { display: flex; flex-direction: column; gap: 4px; width: 100%; font: 11px sans-serif; }
    .pae-row { display: flex; align-items: flex-end; gap: 6px; }
    .pae-player { display: flex; flex-direction: column; flex: 1; min-width: 0; }
    .pae-player audio { width: 100%; height: 32px; }
    .pae-caption { color: var(--descrip-text, #999); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
    .pae-player.pae-active .pae-caption { color: var(--input-text, #ddd); font-weight: bold; }
    .pae-ab { height: 32px; min-width: 42px; cursor: pointer; border-radius: 4px;
              background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd); border: 1px solid #555; }`;
  document.head.append(style);
}

function player(file, label) {
  const box = document.createElement("div");
  box.className = "pae-player";
  const caption = document.createElement("div");
  caption.className = "pae-caption";
  caption.textContent = label;
  caption.title = file.filename;
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "metadata";
  audio.src = fileUrl(file);
  box.append(caption, audio);
  return { box, audio };
}

// One of the pair is heard at a time; switching carries the play position over, so the same moment
// of source and edit can be compared.
function pairRow(pair, label) {
  const row = document.createElement("div");
  row.className = "pae-row";
  const before = player(pair.before, `${label}before`);
  const after = player(pair.after, `${label}after`);
  const button = document.createElement("button");
  button.className = "pae-ab";
  button.textContent = "A/B";
  button.title = "Switch between before and after at the same position";
  let active = before;
  const select = (side) => {
    active = side;
    before.box.classList.toggle("pae-active", side === before);
    after.box.classList.toggle("pae-active", side === after);
  };
  for (const side of [before, after]) {
    side.audio.addEventListener("play", () => {
      const other = side === before ? after : before;
      if (!other.audio.paused) other.audio.pause();
      select(side);
    });
  }
  button.onclick = () => {
    const other = active === before ? after : before;
    const playing = !active.audio.paused;
    const position = active.audio.currentTime;
    active.audio.pause();
    const length = other.audio.duration;
    other.audio.currentTime = Number.isFinite(length) ? Math.min(position, length) : position;
    select(other);
    if (playing) other.audio.play();
  };
  select(before);
  row.append(before.box, button, after.box);
  return row;
}

function panel(node, rows, minWidth = 360) {
  let widget = node.widgets?.find((w) => w.name === PANEL);
  if (!widget) {
    const element = document.createElement("div");
    element.className = "pae-panel";
    widget = node.addDOMWidget(PANEL, "pae_players", element, {
      serialize: false,
      hideOnZoom: false,
      getMinHeight: () => widget.paeRows * ROW_HEIGHT + 8,
      getMaxHeight: () => widget.paeRows * ROW_HEIGHT + 8,
    });
    widget.serialize = false; // display only: never stored in the workflow or sent to the server
  }
  widget.paeRows = rows.length;
  widget.element.replaceChildren(...rows);
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], size[0], minWidth), Math.max(node.size[1], size[1])]);
  node.setDirtyCanvas?.(true, true);
}

function hasCorePlayer(node) {
  return node.widgets?.some((w) => w.type === "AUDIO_UI" || w.name === "audioUI") ?? false;
}

function render(node, output) {
  if (!output) return;
  if (Array.isArray(output.pae_compare) && output.pae_compare.length) {
    const pairs = output.pae_compare;
    // Wide enough that both players show their time.
    panel(node, pairs.map((pair, i) => pairRow(pair, pairs.length > 1 ? `${i + 1}: ` : "")), 600);
    return;
  }
  const clips = Array.isArray(output.audio) ? output.audio : [];
  // ComfyUI's own player (the audioUI widget) plays the first clip; the list holds the others, so each clip is
  // shown once. Without a core player every clip is listed.
  const first = hasCorePlayer(node) ? 1 : 0;
  if (clips.length <= first) return;
  const rows = clips.slice(first).map((file, i) => {
    const row = document.createElement("div");
    row.className = "pae-row";
    const label = clips.length > 1 ? `clip ${i + first + 1} of ${clips.length}: ${file.filename}` : file.filename;
    row.append(player(file, label).box);
    return row;
  });
  if (first) {
    const note = document.createElement("div");
    note.className = "pae-caption";
    note.textContent = `clip 1 of ${clips.length} (${clips[0].filename}) is in the player above`;
    rows.unshift(note);
  }
  panel(node, rows);
}

app.registerExtension({
  name: "PromptAudioEdit.Players",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("PAE_") || !nodeData.output_node) return;
    addStyle();
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      render(this, output);
    };
  },
});
