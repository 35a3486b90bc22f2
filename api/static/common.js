// common.js — shared by the chat page (app.js) and the document page (doc.js):
// the API key in localStorage, fetch with error messages, and safe DOM helpers
// (all server text goes in through textContent, never innerHTML).
"use strict";

const KEY_STORE = "hzrag.apiKey";

function getApiKey() {
  try { return localStorage.getItem(KEY_STORE) || ""; } catch (e) { return ""; }
}

function setApiKey(key) {
  try { localStorage.setItem(KEY_STORE, key); } catch (e) { /* private mode: key lasts this page only */ }
}

/** An error carrying the HTTP status (0 for network failures) and a readable message. */
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** FastAPI's `detail` as text: a string, or a 422 list of {loc, msg, type}. */
function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => (d && d.msg) || JSON.stringify(d)).join("；");
  return detail == null ? "" : JSON.stringify(detail);
}

/** GET or POST JSON to the API with the stored key; throws ApiError on any failure. */
async function api(path, body) {
  const headers = { Accept: "application/json" };
  const key = getApiKey();
  if (key) headers.Authorization = "Bearer " + key;
  const init = { method: body === undefined ? "GET" : "POST", headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "网络错误：无法连接服务器，请检查网络后重试。");
  }
  let data = null;
  try { data = await res.json(); } catch (e) { /* non-JSON body */ }
  if (!res.ok) {
    const msg = detailText(data && data.detail) || res.statusText || "未知错误";
    throw new ApiError(res.status, msg);
  }
  return data;
}

/** createElement with a class and text content. */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

/** One paragraph {start, end, text} as a <p>, with [start, end) (document offsets) in a <mark>. */
function markedParagraph(para, start, end) {
  const p = el("p", "para");
  const lo = Math.max(start, para.start) - para.start;
  const hi = Math.min(end, para.end) - para.start;
  if (hi <= lo) {
    p.textContent = para.text;
    return p;
  }
  // Server offsets count code points; Array.from splits by code point, not UTF-16 unit.
  const chars = Array.from(para.text);
  p.append(chars.slice(0, lo).join(""));
  p.append(el("mark", null, chars.slice(lo, hi).join("")));
  p.append(chars.slice(hi).join(""));
  return p;
}

/** The URL of the whole-document page with [start, end) highlighted. */
function docUrl(docId, start, end) {
  const q = new URLSearchParams({ doc: docId, start: String(start), end: String(end) });
  return "/static/doc.html?" + q.toString();
}
