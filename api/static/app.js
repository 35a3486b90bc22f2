// app.js — the chat page. Owns: saved conversations (localStorage, switch/delete in the sidebar),
// sending a question (POST /chat, or streamed from POST /v1/chat/completions when /health says an
// LLM writes the answers), the stop button, rendering answers with clickable [n] citation markers
// (cited passage shown inline, from /documents/{id}), copy, confidence in words, the folded
// "not found" passages, example questions, errors and the API-key prompt on 401. Uses common.js.
"use strict";

const log = document.getElementById("log");
const form = document.getElementById("ask-form");
const input = document.getElementById("question");
const sendBtn = document.getElementById("send");
const stopBtn = document.getElementById("stop");
const keyBar = document.getElementById("key-bar");
const keyInput = document.getElementById("key-input");
const convNav = document.getElementById("convs");
const convList = document.getElementById("conv-list");
const convEmpty = document.getElementById("conv-empty");
const toggleConvs = document.getElementById("toggle-convs");

const STORE_KEY = "hzrag.conversations";
const MAX_CONVERSATIONS = 50;
const MAX_TURNS_SENT = 50;   // the server accepts at most this many messages
const MAX_HITS_KEPT = 5;     // "not found" passages saved with an answer
// Generic questions about what the articles cover (shown on an empty conversation).
const EXAMPLES = [
  "杭州医药港重点发展哪些产业？",
  "杭州综合保税区有哪些代表企业？",
  "钱塘新区有哪几个产业平台？",
  "杭州高新区（滨江）在共同富裕方面有什么成绩？",
];

let store = loadStore();   // {current: id|null, list: [{id, title, updated, messages}]}
let epoch = 0;             // bumped on switching conversation so late answers are dropped
let pending = null;        // the AbortController of the request in flight
let retryText = null;      // the question to resend once an API key is entered
let llmStreams = false;    // an LLM writes the answers: stream them as they are written
const docs = new Map();    // doc_id -> Promise<DocumentResponse>

// --- saved conversations -------------------------------------------------------------

function loadStore() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE_KEY) || "null");
    if (saved && Array.isArray(saved.list)) return saved;
  } catch (e) { /* unreadable: start afresh */ }
  return { current: null, list: [] };
}

function saveStore() {
  store.list.sort((a, b) => b.updated - a.updated);
  store.list = store.list.slice(0, MAX_CONVERSATIONS);
  for (;;) {
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify(store));
      return;
    } catch (e) {
      // Storage full (or private mode): drop the oldest other conversation and try again.
      const oldest = store.list.length > 1 ? store.list[store.list.length - 1] : null;
      if (!oldest) return;
      store.list.pop();
    }
  }
}

function currentConversation() {
  return store.list.find((c) => c.id === store.current) || null;
}

/** The open conversation, made (titled by its first question) when the first question is sent. */
function ensureConversation(firstQuestion) {
  let conv = currentConversation();
  if (!conv) {
    const id = Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    conv = { id, title: firstQuestion.slice(0, 40), updated: Date.now(), messages: [] };
    store.list.unshift(conv);
    store.current = id;
  }
  return conv;
}

/** What is kept of a reply: enough to render it again after a reload. */
function savedReply(data) {
  return {
    answer: data.answer || "", abstained: !!data.abstained, confidence: data.confidence,
    question: data.question || "", note: data.note || "", citations: data.citations || [],
    hits: data.abstained ? (data.hits || []).slice(0, MAX_HITS_KEPT) : [],
  };
}

function renderConvList() {
  convList.replaceChildren();
  convEmpty.hidden = store.list.length > 0;
  for (const conv of store.list) {
    const li = el("li", "conv");
    const open = el("button", "conv-open", conv.title || "新对话");
    open.type = "button";
    open.title = conv.title;
    if (conv.id === store.current) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => switchTo(conv.id));
    const del = el("button", "conv-delete", "×");
    del.type = "button";
    del.setAttribute("aria-label", "删除对话：" + conv.title);
    del.title = "删除对话";
    del.addEventListener("click", () => deleteConversation(conv.id));
    li.append(open, del);
    convList.append(li);
  }
}

/** Leave whatever is in flight and show conversation ``id`` (null: a new, empty one). */
function switchTo(id) {
  cancelPending();
  store.current = id;
  saveStore();
  retryText = null;
  renderConversation();
  renderConvList();
  showConvs(false);
  input.focus();
}

function deleteConversation(id) {
  store.list = store.list.filter((c) => c.id !== id);
  if (store.current === id) {
    switchTo(null);
  } else {
    saveStore();
    renderConvList();
  }
}

function renderConversation() {
  log.replaceChildren();
  const conv = currentConversation();
  if (!conv || !conv.messages.length) {
    showWelcome();
    return;
  }
  let asked = "";
  for (const m of conv.messages) {
    if (m.role === "user") {
      asked = m.content;
      addBubble("user").textContent = m.content;
    } else {
      renderAnswer(m.data || { answer: m.content, citations: [] }, asked);
    }
  }
  scrollDown();
}

function showWelcome() {
  const box = el("div", "welcome");
  box.id = "welcome";
  const intro = el("p", null, "根据资料回答关于杭州产业平台的问题，每句回答都标有来源 ");
  intro.append(el("span", "cite-sample", "[1]"), "，点击即可查看原文。");
  const examples = el("div", "examples");
  examples.setAttribute("role", "group");
  examples.setAttribute("aria-label", "示例问题");
  for (const q of EXAMPLES) {
    const b = el("button", "example", q);
    b.type = "button";
    b.addEventListener("click", () => send(q));
    examples.append(b);
  }
  box.append(intro, el("p", "muted small", "试试这些问题："), examples);
  log.append(box);
}

function showConvs(on) {
  document.body.classList.toggle("convs-open", on);
  toggleConvs.setAttribute("aria-expanded", on ? "true" : "false");
}

// --- asking ------------------------------------------------------------------------------

function scrollDown() { log.scrollTop = log.scrollHeight; }

function addBubble(role, className) {
  document.getElementById("welcome")?.remove();
  const bubble = el("div", "msg " + role + (className ? " " + className : ""));
  log.append(bubble);
  return bubble;
}

function setPending(controller) {
  pending = controller;
  sendBtn.hidden = !!controller;
  stopBtn.hidden = !controller;
  log.setAttribute("aria-busy", controller ? "true" : "false");
}

function cancelPending() {
  epoch += 1;
  if (pending) pending.abort();
  setPending(null);
}

async function send(text) {
  text = text.trim();
  if (!text || pending) return;
  const conv = ensureConversation(text);
  addBubble("user").textContent = text;
  conv.messages.push({ role: "user", content: text });
  conv.updated = Date.now();
  saveStore();
  renderConvList();
  const turns = conv.messages.slice(-MAX_TURNS_SENT).map((m) => ({ role: m.role, content: m.content }));

  const loading = addBubble("assistant", "loading");
  loading.append(el("span", "spinner"), el("span", null, "正在检索资料…"));
  scrollDown();
  const controller = new AbortController();
  setPending(controller);
  const mine = epoch;
  try {
    const data = llmStreams
      ? await streamAnswer(turns, loading, controller.signal)
      : await api("/chat", { messages: turns }, controller.signal);
    if (mine !== epoch) return;
    loading.remove();
    renderAnswer(data, text);
    conv.messages.push({ role: "assistant", content: data.answer || "", data: savedReply(data) });
    conv.updated = Date.now();
  } catch (err) {
    if (mine !== epoch && err.name !== "AbortError") return;
    loading.remove();
    conv.messages.pop(); // a failed or stopped question is not part of the conversation
    if (!conv.messages.length) {
      store.list = store.list.filter((c) => c !== conv);
      if (store.current === conv.id) store.current = null;
    }
    if (mine === epoch) {
      if (err.name === "AbortError") showStopped(text);
      else showError(err, text);
    }
  } finally {
    if (mine === epoch) setPending(null);
    saveStore();
    renderConvList();
    scrollDown();
  }
}

/** The reply text as the server sends it on /v1: the answer, then "来源：" and a sources list. */
function answerPart(text) {
  const cut = text.indexOf("\n\n来源：");
  return cut < 0 ? text : text.slice(0, cut);
}

/**
 * POST the turns to /v1/chat/completions with stream: true and show the answer as it arrives
 * (server-sent events, OpenAI's chunk format). The last chunk carries citations and the rest.
 */
async function streamAnswer(turns, bubble, signal) {
  const res = await request("/v1/chat/completions", {
    method: "POST", headers: apiHeaders(true), signal,
    body: JSON.stringify({ model: "hz-rag", messages: turns, stream: true }),
  });
  if (!res.ok) throw await responseError(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  const shown = el("div", "answer");
  let buffer = "";
  let text = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const payload = line.slice(5).trim();
        if (payload === "[DONE]") continue;
        const chunk = JSON.parse(payload);
        const choice = (chunk.choices || [])[0] || {};
        if (choice.delta && choice.delta.content) text += choice.delta.content;
        if (choice.finish_reason) last = chunk;
      }
      if (text && !bubble.classList.contains("streaming")) {
        bubble.className = "msg assistant streaming";
        bubble.replaceChildren(shown);
      }
      shown.textContent = answerPart(text);
      scrollDown();
    }
  }
  if (!last) throw new ApiError(0, "回答中断：服务器没有发完回答，请重试。");
  return {
    // The final answer (markers renumbered to its citations) replaces the text as written.
    answer: last.answer || answerPart(text), abstained: !!last.abstained, confidence: last.confidence,
    citations: last.citations || [], hits: last.hits || [], note: last.note || "",
    // The server's reading of the question (a follow-up rewritten with its subject).
    question: last.question || turns[turns.length - 1].content,
  };
}

function showStopped(text) {
  addBubble("assistant", "stopped").append(el("span", "muted", "已停止回答。"));
  if (!input.value) {
    input.value = text;
    autoGrow();
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

// --- rendering an answer -------------------------------------------------------------------

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

/** Confidence (a probability in [0, 1]) in words: 高 ≥ 0.8, 中 ≥ 0.5, else 低; the percentage beside it. */
function confidenceNode(value) {
  const p = Math.min(1, Math.max(0, Number(value) || 0));
  const [word, level] = p >= 0.8 ? ["高", "high"] : p >= 0.5 ? ["中", "mid"] : ["低", "low"];
  const pct = Math.round(p * 100) + "%";
  const node = el("span", "confidence " + level, "可信度：" + word);
  node.title = "估计答案正确的概率约 " + pct;
  node.append(el("span", "pct", " " + pct));
  return node;
}

/** The answer and its sources as plain text for the clipboard. */
function copyText(data) {
  const sources = (data.citations || []).map((c) => "[" + c.id + "] " + c.title);
  return (data.answer || "") + (sources.length ? "\n\n来源：\n" + sources.join("\n") : "");
}

async function copyToClipboard(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (e) {
    // No clipboard API (plain http on another host): the old way, through a selected textarea.
    const area = el("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

function copyButton(data) {
  const btn = el("button", "copy", "复制");
  btn.type = "button";
  btn.setAttribute("aria-label", "复制回答");
  btn.addEventListener("click", async () => {
    const ok = await copyToClipboard(copyText(data));
    btn.textContent = ok ? "已复制" : "复制失败";
    setTimeout(() => { btn.textContent = "复制"; }, 1500);
  });
  return btn;
}

function docLink(docId, start, end) {
  const link = el("a", "open-doc", "打开全文");
  link.href = docUrl(docId, start, end);
  link.target = "_blank";
  link.rel = "noopener";
  return link;
}

/** The closest passages of a "not found" reply, folded: one summary line, opened on demand. */
function closestPassages(hits) {
  const box = el("details", "closest");
  box.append(el("summary", null, "查看最接近的 " + hits.length + " 个段落"));
  const list = el("ul", "suggestions");
  for (const hit of hits) {
    const li = el("li");
    const text = hit.text.length > 140 ? hit.text.slice(0, 140) + "…" : hit.text;
    li.append(el("div", "hit-title", hit.title), el("div", "hit-text", text), docLink(hit.doc_id, hit.start, hit.end));
    list.append(li);
  }
  box.append(list);
  return box;
}

function renderAnswer(data, asked) {
  const bubble = addBubble("assistant", data.abstained ? "abstained" : "");
  const passage = el("div", "passage");
  passage.hidden = true;
  const onCite = (cit, btn) => togglePassage(passage, cit, btn, bubble);
  const answer = el("div", "answer");
  answer.append(...answerNodes(data.answer || "", data.citations || [], onCite));

  if (data.abstained) {
    // One line: the badge and the answer's sentence; the passages below are folded.
    const line = el("div", "notfound-line");
    line.append(el("span", "badge", "未找到"), answer);
    bubble.append(line);
  } else {
    if (data.question && data.question !== asked) {
      bubble.append(el("div", "muted small", "理解为：" + data.question));
    }
    bubble.append(answer);
  }
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
  if (data.abstained && data.hits && data.hits.length) bubble.append(closestPassages(data.hits));

  const actions = el("div", "actions");
  if (!data.abstained && data.confidence != null) actions.append(confidenceNode(data.confidence));
  actions.append(copyButton(data));
  bubble.append(actions);
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
    head.append(el("strong", null, "[" + cit.id + "] " + cit.title),
      el("span", "muted small", " " + doc.path + (cit.page ? " · 第 " + cit.page + " 页" : "")
        + " · 第 " + cit.line_start + "–" + cit.line_end + " 行"));
    const body = el("div", "passage-body");
    for (const p of shown) body.append(markedParagraph(p, cit.start, cit.end));
    passage.replaceChildren(head, body, docLink(cit.doc_id, cit.start, cit.end));
  } catch (err) {
    passage.replaceChildren(el("div", "error-text", "无法加载原文：" + err.message));
    if (err.status === 401) keyBar.hidden = false;
  }
  passage.scrollIntoView({ block: "nearest" });
}

// --- controls -----------------------------------------------------------------------------

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = input.value;
  if (!text.trim() || pending) return;
  input.value = "";
  autoGrow();
  send(text);
});

stopBtn.addEventListener("click", () => {
  if (pending) pending.abort();
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
  switchTo(null);
  input.value = "";
  autoGrow();
});

toggleConvs.addEventListener("click", () => showConvs(!document.body.classList.contains("convs-open")));

// Another tab changed the saved conversations: show them (the open one only if idle).
window.addEventListener("storage", (e) => {
  if (e.key !== STORE_KEY) return;
  store = loadStore();
  renderConvList();
  if (!pending) renderConversation();
});

// Does an LLM write the answers? Then they are streamed; otherwise /chat answers at once.
api("/health").then((h) => { llmStreams = !!(h && h.llm); }).catch(() => { /* not ready: /chat says why */ });

renderConversation();
renderConvList();
input.focus();
