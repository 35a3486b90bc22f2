// doc.js — the whole-document page: fetches /documents/{doc}, renders every paragraph with
// its raw line number, puts the cited range [start, end) in <mark>s and scrolls to it.
"use strict";

(async function () {
  const params = new URLSearchParams(location.search);
  const docId = params.get("doc") || "";
  const start = Number(params.get("start"));
  const end = Number(params.get("end"));
  const status = document.getElementById("doc-status");
  const body = document.getElementById("doc-body");
  if (!docId) {
    status.textContent = "缺少文档编号。";
    return;
  }
  let doc;
  try {
    doc = await api("/documents/" + encodeURIComponent(docId));
  } catch (err) {
    status.className = "error-text";
    status.textContent = "无法加载原文" + (err.status ? "（HTTP " + err.status + "）" : "") + "：" + err.message
      + (err.status === 401 ? " 请先在问答页输入 API 密钥。" : "");
    return;
  }
  document.title = doc.title + " · 原文";
  document.getElementById("doc-title").textContent = doc.title;
  document.getElementById("doc-meta").textContent = doc.path + " · " + doc.paragraphs.length + " 段";
  status.remove();
  const hasRange = Number.isFinite(start) && Number.isFinite(end) && end > start;
  let page = null;
  for (const para of doc.paragraphs) {
    if (para.page && para.page !== page) {
      // An uploaded PDF: mark where each page starts, so a citation's page can be seen in context.
      page = para.page;
      body.append(el("p", "muted small page-mark", "— 第 " + page + " 页 —"));
    }
    const p = hasRange ? markedParagraph(para, start, end) : el("p", "para", para.text);
    p.dataset.line = String(para.line_start);
    p.title = (para.page ? "第 " + para.page + " 页 · " : "") + "第 " + para.line_start + (para.line_end !== para.line_start ? "–" + para.line_end : "") + " 行";
    body.append(p);
  }
  const first = body.querySelector("mark");
  if (first) {
    first.id = "cited";
    first.scrollIntoView({ block: "center" });
  }
})();
