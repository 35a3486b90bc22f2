// documents.js — the documents page: uploads through XMLHttpRequest (for upload progress),
// the list from GET /documents refreshed while anything is queued or indexing, and delete
// after confirm(). Server text goes in through textContent only (el() in common.js).
"use strict";

(function () {
  const rows = document.getElementById("doc-rows");
  const drop = document.getElementById("drop");
  const input = document.getElementById("file-input");
  const bar = document.getElementById("upload-progress");
  const upStatus = document.getElementById("upload-status");
  const idxStatus = document.getElementById("index-status");
  const STATUS = { queued: "排队中", indexing: "索引中", ready: "可用", failed: "失败", deleting: "删除中" };
  let timer = null;

  function size(n) {
    if (n == null) return "";
    return n > 1048576 ? (n / 1048576).toFixed(1) + " MB" : Math.max(1, Math.round(n / 1024)) + " KB";
  }

  async function refresh() {
    let docs, status;
    try {
      [docs, status] = await Promise.all([api("/documents"), api("/index/status")]);
    } catch (err) {
      idxStatus.textContent = "无法加载文档列表：" + err.message;
      return;
    }
    rows.replaceChildren();
    for (const d of docs) {
      const tr = document.createElement("tr");
      tr.dataset.doc = d.doc_id;
      const title = el("td");
      if (d.status === "ready") {
        const a = el("a", "", d.title);
        a.href = "/static/doc.html?doc=" + encodeURIComponent(d.doc_id);
        title.append(a);
      } else {
        title.textContent = d.title;
      }
      if (d.name) title.append(el("div", "muted small", d.name));
      const st = el("td", "st-" + d.status, STATUS[d.status] || d.status);
      if (d.reason) st.append(el("div", "small", d.reason));
      const pages = d.pages == null ? "" : d.pages + (d.ocr_pages ? "（OCR " + d.ocr_pages + "）" : "");
      tr.append(title, el("td", "", d.format), el("td", "", pages), el("td", "", d.passages == null ? "" : String(d.passages)),
        el("td", "", size(d.size)), el("td", "", d.added ? d.added.replace("T", " ").slice(0, 16) : ""), st);
      const cell = el("td");
      if (d.uploaded && d.status !== "deleting") {
        const del = el("button", "secondary small", "删除");
        del.type = "button";
        del.addEventListener("click", () => remove(d));
        cell.append(del);
      }
      tr.append(cell);
      rows.append(tr);
    }
    const last = status.last_build;
    idxStatus.textContent = (status.running ? "正在处理：" + status.progress : "索引空闲")
      + (status.pending ? "；待处理文档 " + status.pending + " 个" : "")
      + (last ? "；上次构建 " + last.finished_at.replace("T", " ") + (last.ok ? " 成功" : " 失败：" + last.error) : "");
    const busy = status.running || status.pending || docs.some((d) => ["queued", "indexing", "deleting"].includes(d.status));
    clearTimeout(timer);
    if (busy) timer = setTimeout(refresh, 1500);
  }

  async function remove(doc) {
    if (!confirm("确定删除「" + doc.title + "」吗？删除后将不再用它回答问题。")) return;
    try {
      const res = await fetch("/documents/" + encodeURIComponent(doc.doc_id), { method: "DELETE", headers: apiHeaders() });
      if (!res.ok) throw new Error((await res.json().catch(() => ({}))).detail || res.statusText);
    } catch (err) {
      upStatus.textContent = "删除失败：" + err.message;
    }
    refresh();
  }

  function upload(files) {
    if (!files.length) return;
    const form = new FormData();
    for (const f of files) form.append("file", f, f.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/documents");
    const key = getApiKey();
    if (key) xhr.setRequestHeader("Authorization", "Bearer " + key);
    bar.hidden = false;
    bar.value = 0;
    upStatus.className = "small";
    upStatus.textContent = "正在上传 " + files.length + " 个文件…";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total); };
    xhr.onload = () => {
      bar.hidden = true;
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 202 && data) {
        upStatus.textContent = "已上传，正在后台建立索引：" + data.documents.map((d) => d.name).join("、");
      } else {
        upStatus.className = "small error-text";
        upStatus.textContent = "上传失败（HTTP " + xhr.status + "）：" + detailText(data && data.detail);
      }
      refresh();
    };
    xhr.onerror = () => {
      bar.hidden = true;
      upStatus.className = "small error-text";
      upStatus.textContent = "网络错误：上传未完成。";
    };
    xhr.send(form);
  }

  input.addEventListener("change", () => { upload([...input.files]); input.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    upload([...e.dataTransfer.files]);
  });
  refresh();
})();
