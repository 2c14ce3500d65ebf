// Canvas helpers for the assr-eic node pack:
//  - every ASSR_* node shows the text its last run reported (bytes, bpp, scale, quality, PSNR ...), kept in
//    the node's properties so it is still there after a tab switch, a reload or in a saved workflow;
//  - Load ASSR Bitstream gets an upload button (and accepts a dropped .assr file), because ComfyUI's
//    built-in upload widget only takes images, audio and video;
//  - Save ASSR Bitstream shows a download link per saved file, served by ComfyUI's own /view route
//    (so a remote or cloud ComfyUI hands the .assr to the browser), and an "embed in workflow" button
//    that adds an ASSR Embedded Bitstream node holding the file as text (a shared workflow then carries it);
//  - an .assr file dropped on the canvas (not on a node) opens the pack's decode template in a new tab with
//    Load ASSR Bitstream holding the file, so Run decodes it (ComfyUI alone says "Unable to find workflow").
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

// The pack's folder as ComfyUI serves it (/extensions/<folder>/assr_eic.js); its templates are served under
// /api/workflow_templates/<folder>/ whatever name the user cloned it as.
const PACK = decodeURIComponent(new URL(import.meta.url).pathname.split("/").slice(-2)[0]);
const DECODE_TEMPLATE = "2 Decode an ASSR file at any size"; // example_workflows/<this>.json

// ComfyUI lists a pack's templates in its folder's directory order (random on most file systems): list ours by
// their numbered names, simplest first.
const getWorkflowTemplates = api.getWorkflowTemplates?.bind(api);
if (getWorkflowTemplates) {
  api.getWorkflowTemplates = async () => {
    const all = await getWorkflowTemplates();
    if (Array.isArray(all?.[PACK])) {
      all[PACK] = [...all[PACK]].sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
    }
    return all;
  };
}

const INFO = "assr_info";
const UPLOAD = "upload .assr file";
const DOWNLOADS = "assr_downloads";
const REPORT = "assr_report"; // node.properties key: the last run's text and saved files (serialized with the graph)

function addInfoWidget(node) {
  const el = document.createElement("textarea");
  el.readOnly = true;
  el.placeholder = "runs report here";
  el.style.cssText = "width:100%;font:11px monospace;opacity:0.85;resize:none;white-space:pre-wrap;";
  const widget = node.addDOMWidget(INFO, "assr_info", el, {
    getValue: () => el.value,
    setValue: (v) => { el.value = v ?? ""; },
    serialize: false,
  });
  widget.serialize = false; // not part of the workflow nor of the prompt
  widget.inputEl = el;
  return widget;
}

function addDownloadWidget(node) {
  const el = document.createElement("div");
  el.style.cssText = "font:11px monospace;display:flex;flex-direction:column;gap:2px;overflow:auto;";
  el.textContent = "download links appear here after a run";
  const widget = node.addDOMWidget(DOWNLOADS, "assr_downloads", el, { serialize: false });
  widget.serialize = false;
  widget.inputEl = el;
  return widget;
}

// An ASSR Embedded Bitstream node below ``node`` holding ``text`` (the file as "assr:" + base64).
function embedInWorkflow(node, text) {
  const created = window.LiteGraph?.createNode("ASSR_EmbeddedBitstream");
  if (!created) return null;
  created.pos = [node.pos[0], node.pos[1] + node.size[1] + 40];
  app.graph.add(created);
  const widget = created.widgets?.find((w) => w.name === "text");
  if (widget) widget.value = text;
  app.graph.setDirtyCanvas(true, true);
  return created;
}

// One link per saved file ({filename, subfolder, type} as Save ASSR Bitstream reports it) to /view, and a
// button that embeds that file in the workflow.
function showDownloads(node, files, texts) {
  const el = node.widgets?.find((w) => w.name === DOWNLOADS)?.inputEl;
  if (!el || !Array.isArray(files)) return;
  el.replaceChildren(
    ...files.map((f, i) => {
      const row = document.createElement("div");
      const a = document.createElement("a");
      const params = new URLSearchParams({ filename: f.filename, subfolder: f.subfolder ?? "", type: f.type });
      a.href = api.apiURL(`/view?${params}`);
      a.download = f.filename;
      a.textContent = `download ${f.subfolder ? `${f.subfolder}/` : ""}${f.filename}`;
      a.style.color = "inherit";
      row.append(a);
      if (texts?.[i]) {
        const b = document.createElement("button");
        b.textContent = "embed in workflow";
        b.title = "Add an ASSR Embedded Bitstream node holding this file, so the saved workflow carries it";
        b.style.cssText = "margin-left:6px;font:11px monospace;";
        b.onclick = () => embedInWorkflow(node, texts[i]);
        row.append(b);
      }
      return row;
    }),
  );
}

// What the last run reported: the info text, and Save ASSR Bitstream's download links.
function showReport(node, report) {
  const widget = node.widgets?.find((w) => w.name === INFO);
  if (widget && report.text) widget.value = report.text;
  if (report.files) showDownloads(node, report.files, report.texts);
}

// Store ``file`` in ComfyUI's input folder; returns the name Load ASSR Bitstream lists it under.
async function uploadFile(file) {
  if (!file.name.toLowerCase().endsWith(".assr")) {
    throw new Error(`${file.name} is not an .assr file`);
  }
  const body = new FormData();
  body.append("image", file, file.name); // ComfyUI's upload route stores any file in the input folder
  body.append("type", "input");
  const resp = await api.fetchApi("/upload/image", { method: "POST", body });
  if (resp.status !== 200) throw new Error(`upload failed: ${resp.status} ${resp.statusText}`);
  const data = await resp.json();
  return data.subfolder ? `${data.subfolder}/${data.name}` : data.name;
}

// Point Load ASSR Bitstream ``node`` at the input file ``name``.
function selectBitstream(node, name) {
  const combo = node.widgets?.find((w) => w.name === "bitstream");
  if (!combo) throw new Error(`${node.type} has no bitstream widget`);
  if (!combo.options.values.includes(name)) {
    combo.options.values = [...combo.options.values, name].sort();
  }
  combo.value = name;
  combo.callback?.(name);
  node.setDirtyCanvas(true, true);
  return name;
}

async function uploadBitstream(node, file) {
  return selectBitstream(node, await uploadFile(file));
}

function addUploadWidget(node) {
  const input = document.createElement("input");
  input.type = "file";
  input.accept = ".assr";
  input.style.display = "none";
  input.onchange = async () => {
    if (!input.files.length) return;
    try {
      await uploadBitstream(node, input.files[0]);
    } catch (e) {
      alert(e.message);
    }
    input.value = "";
  };
  document.body.append(input);
  const widget = node.addWidget("button", UPLOAD, null, () => input.click());
  widget.serialize = false;
  widget.options.serialize = false;
  const onRemoved = node.onRemoved;
  node.onRemoved = function () {
    input.remove();
    return onRemoved?.apply(this, arguments);
  };
  node.onDragOver = (e) => [...(e.dataTransfer?.items ?? [])].some((i) => i.kind === "file");
  node.onDragDrop = (e) => {
    const file = [...(e.dataTransfer?.files ?? [])].find((f) => f.name.toLowerCase().endsWith(".assr"));
    if (!file) return false;
    uploadBitstream(node, file).catch((err) => alert(err.message));
    return true;
  };
}

// Upload ``file`` and open the decode template in a new tab with Load ASSR Bitstream set to it. The upload
// comes first: a refused file leaves every open workflow as it was.
async function openDecodeWorkflow(file) {
  const url = `/workflow_templates/${encodeURIComponent(PACK)}/${encodeURIComponent(DECODE_TEMPLATE)}.json`;
  const resp = await api.fetchApi(url);
  if (resp.status !== 200) throw new Error(`the decode workflow of ${PACK} is missing (${resp.status})`);
  const workflow = await resp.json();
  const name = await uploadFile(file);
  await app.loadGraphData(workflow, true, true, file.name.replace(/\.assr$/i, ""));
  const load = app.graph._nodes.find((n) => n.type === "ASSR_LoadBitstream");
  if (!load) throw new Error("the decode workflow has no Load ASSR Bitstream node");
  return selectBitstream(load, name);
}

// Capture phase, so this runs before ComfyUI's own drop handler (which then sees defaultPrevented); a drop
// on a node (Load ASSR Bitstream's own onDragDrop) and drops without an .assr file are left to ComfyUI.
document.addEventListener(
  "drop",
  (e) => {
    const files = [...(e.dataTransfer?.files ?? [])].filter((f) => f.name.toLowerCase().endsWith(".assr"));
    if (!files.length || app.dragOverNode) return;
    e.preventDefault();
    e.stopPropagation();
    (async () => {
      for (const file of files) await openDecodeWorkflow(file);
    })().catch((err) => alert(err.message));
  },
  true,
);

app.registerExtension({
  name: "assr_eic.nodes",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name?.startsWith("ASSR_")) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      if (nodeData.name === "ASSR_LoadBitstream") addUploadWidget(this);
      if (nodeData.name === "ASSR_SaveBitstream") addDownloadWidget(this);
      addInfoWidget(this);
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text;
      const report = { ...(this.properties?.[REPORT] ?? {}) };
      if (text) report.text = Array.isArray(text) ? text.join("\n") : String(text);
      if (message?.assr) Object.assign(report, { files: message.assr, texts: message.assr_text ?? [] });
      this.properties = { ...(this.properties ?? {}), [REPORT]: report };
      showReport(this, report);
      // let the frontend's change tracker see the new properties, so the tab's persisted copy holds them
      app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.();
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      const report = this.properties?.[REPORT];
      if (report) showReport(this, report);
      return r;
    };
  },
});
