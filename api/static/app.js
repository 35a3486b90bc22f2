// app.js — the chat page: keeps the conversation, POSTs it to /chat, renders answers
// with clickable [n] citation markers (cited passage shown inline, from /documents/{id}),
// the "not found" state, loading, errors and the API-key prompt on 401. Uses common.js.
"use strict";

const log = document.getElementById("log");
const form = document.getElementById("ask-form");
const input = document.getElementById("question");
const sendBtn = document.getElementById("send");
const keyBar = document.getElementById("key-bar");
const keyInput = document.getElementById("key-input");

let history = [];      // [{role: "user"|"assistant", content}], sent whole so follow-ups work
let epoch = 0;         // bumped by "new conversation" so late answers are dropped
let pending = false;
let retryText = null;  // the question to resend once an API key is entered
const docs = new Map(); // doc_id -> Promise<DocumentResponse>

function scrollDown() { log.scrollTop = log.scrollHeight; }

function addBubble(role, className) {
  document.getElementById("welcome")?.remove();
  const bubble = el("div", "msg " + role + (className ? " " + className : ""));
  log.append(bubble);
  return bubble;
}

function setPending(on) {
  pending = on;
  sendBtn.disabled = on;
  log.setAttribute("aria-busy", on ? "true" : "false");
}

async function send(text) {
  text = text.trim();
  if (!text || pending) return;
  addBubble("user").textContent = text;
  history.push({ role: "user", content: text });
  const loading = addBubble("assistant", "loading");
  loading.append(el("span", "spinner"), el("span", null, "正在检索资料…"));
  scrollDown();
  setPending(true);
  const mine = epoch;
  try {
    const data = await api("/chat", { messages: history.slice(-50) });
    if (mine !== epoch) return;
    loading.remove();
    renderAnswer(data, text);
    history.push({ role: "assistant", content: data.answer });
  } catch (err) {
    if (mine !== epoch) return;
    loading.remove();
    history.pop(); // the failed question is not part of the conversation
    showError(err, text);
  } finally {
    if (mine === epoch) setPending(false);
    scrollDown();
  }
}

function showError(err, text) {
  const bubble = addBubble("assistant", "error");
  const where = err.status ? "（HTTP " + err.status + "）" : "";
  bubble.append(el("strong", null, "出错了" + where + "："), el("span", "detail", err.message));
  if (err.status === 401) {
    retryText = text;
    keyBar.hidden = false;
    keyInput.focus();
  } else if (!input.value) {
    input.value = text; // let the user fix and resend
    autoGrow();
  }
}

/** The answer text as nodes, each [n] with a matching citation made a button. */
function answerNodes(answer, citations, onCite) {
  const byId = new Map(citations.map((c) => [c.id, c]));
  const nodes = [];
  let last = 0;
  for (const m of answer.matchAll(/\[(\d+)\]/g)) {
    const cit = byId.get(Number(m[1]));
    if (!cit) continue;
    nodes.push(document.createTextNode(answer.slice(last, m.index)));
    const btn = el("button", "cite", "[" + cit.id + "]");
    btn.type = "button";
    btn.title = "查看来源：" + cit.title;
    btn.setAttribute("aria-expanded", "false");
    btn.addEventListener("click", () => onCite(cit, btn));
    nodes.push(btn);
    last = m.index + m[0].length;
  }
  nodes.push(document.createTextNode(answer.slice(last)));
  return nodes;
}

function renderAnswer(data, asked) {
  const bubble = addBubble("assistant", data.abstained ? "abstained" : "");
  const passage = el("div", "passage");
  passage.hidden = true;
  const onCite = (cit, btn) => togglePassage(passage, cit, btn, bubble);

  if (data.abstained) bubble.append(el("div", "badge", "资料中未找到答案"));
  if (data.question && data.question !== asked) {
    bubble.append(el("div", "muted small", "理解为：" + data.question));
  }
  const answer = el("div", "answer");
  answer.append(...answerNodes(data.answer || "", data.citations || [], onCite));
  bubble.append(answer);
  if (data.note) bubble.append(el("div", "muted small", data.note));

  if (data.citations && data.citations.length) {
    const list = el("ol", "sources");
    for (const cit of data.citations) {
      const li = el("li");
      const btn = el("button", "source-link", "[" + cit.id + "] " + cit.title);
      btn.type = "button";
      btn.addEventListener("click", () => onCite(cit, btn));
      li.append(btn, el("span", "muted small", (cit.page ? " 第 " + cit.page + " 页 ·" : "")
        + " 第 " + cit.line_start + "–" + cit.line_end + " 行"));
      list.append(li);
    }
    bubble.append(list);
  }
  bubble.append(passage);

  if (data.abstained && data.hits && data.hits.length) {
    bubble.append(el("div", "suggest-title", "最接近的段落："));
    const list = el("ul", "suggestions");
    for (const hit of data.hits) {
      const li = el("li");
      const text = hit.text.length > 140 ? hit.text.slice(0, 140) + "…" : hit.text;
      const link = el("a", "open-doc", "打开全文");
      link.href = docUrl(hit.doc_id, hit.start, hit.end);
      link.target = "_blank";
      link.rel = "noopener";
      li.append(el("div", "hit-title", hit.title), el("div", "hit-text", text), link);
      list.append(li);
    }
    bubble.append(list);
  }
  bubble.append(el("div", "muted small", "置信度 " + Number(data.confidence || 0).toFixed(2)));
}

function loadDoc(docId) {
  if (!docs.has(docId)) {
    const p = api("/documents/" + encodeURIComponent(docId));
    p.catch(() => docs.delete(docId)); // retry on the next click
    docs.set(docId, p);
  }
  return docs.get(docId);
}

/** Show (or hide, on a second click) the cited paragraph(s) with the sentence in a <mark>. */
async function togglePassage(passage, cit, btn, bubble) {
  const open = passage.dataset.cite === String(cit.id) && !passage.hidden;
  bubble.querySelectorAll("button.cite").forEach((b) => b.setAttribute("aria-expanded", "false"));
  if (open) {
    passage.hidden = true;
    return;
  }
  bubble.querySelectorAll("button.cite").forEach((b) => {
    if (b.textContent === "[" + cit.id + "]") b.setAttribute("aria-expanded", "true");
  });
  passage.dataset.cite = String(cit.id);
  passage.hidden = false;
  passage.replaceChildren(el("div", "muted", "正在加载原文…"));
  try {
    const doc = await loadDoc(cit.doc_id);
    if (passage.dataset.cite !== String(cit.id)) return; // another marker was clicked meanwhile
    const paras = doc.paragraphs;
    let first = paras.findIndex((p) => p.end > cit.start);
    let last = paras.findIndex((p) => p.start >= cit.end) - 1;
    if (first < 0) first = paras.length - 1;
    if (last < -1) last = paras.length - 1;
    last = Math.max(first, last);
    const shown = paras.slice(Math.max(0, first - 1), last + 2); // one paragraph of context each side

    const head = el("div", "passage-head");
    head.append(el("strong", null, "[" + cit.id + "] " + doc.title),
      el("span", "muted small", " " + doc.path + (cit.page ? " · 第 " + cit.page + " 页" : "")
        + " · 第 " + cit.line_start + "–" + cit.line_end + " 行"));
    const body = el("div", "passage-body");
    for (const p of shown) body.append(markedParagraph(p, cit.start, cit.end));
    const link = el("a", "open-doc", "打开全文");
    link.href = docUrl(cit.doc_id, cit.start, cit.end);
    link.target = "_blank";
    link.rel = "noopener";
    passage.replaceChildren(head, body, link);
  } catch (err) {
    passage.replaceChildren(el("div", "error-text", "无法加载原文：" + err.message));
    if (err.status === 401) keyBar.hidden = false;
  }
  passage.scrollIntoView({ block: "nearest" });
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = input.value;
  if (!text.trim() || pending) return;
  input.value = "";
  autoGrow();
  send(text);
});

input.addEventListener("keydown", (e) => {
  // Enter sends; Shift+Enter is a newline; Enter while an IME is composing picks a word.
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    form.requestSubmit();
  }
});

function autoGrow() {
  input.style.height = "auto";
  input.style.height = Math.min(input.scrollHeight, 160) + "px";
}
input.addEventListener("input", autoGrow);

keyBar.addEventListener("submit", (e) => {
  e.preventDefault();
  const key = keyInput.value.trim();
  if (!key) return;
  setApiKey(key);
  keyInput.value = "";
  keyBar.hidden = true;
  docs.clear();
  if (retryText) {
    const text = retryText;
    retryText = null;
    send(text);
  }
});

document.getElementById("new-chat").addEventListener("click", () => {
  epoch += 1;
  history = [];
  retryText = null;
  setPending(false);
  log.replaceChildren();
  log.append(el("div", "welcome muted", "新对话已开始，请输入问题。"));
  log.lastChild.id = "welcome";
  input.value = "";
  autoGrow();
  input.focus();
});

input.focus();
