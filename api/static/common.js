// common.js — shared by the chat page (app.js) and the document page (doc.js):
// the API key in localStorage, fetch with readable errors (FastAPI and OpenAI shapes), and safe DOM helpers
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

/** Request headers: JSON, and the stored key if there is one. */
function apiHeaders(json) {
  const headers = { Accept: "application/json" };
  const key = getApiKey();
  if (key) headers.Authorization = "Bearer " + key;
  if (json) headers["Content-Type"] = "application/json";
  return headers;
}

/** The error text of a JSON error body: FastAPI's `detail`, or OpenAI's `error.message` (/v1/*). */
function errorText(data) {
  if (data && data.error && data.error.message) return String(data.error.message);
  return detailText(data && data.detail);
}

/** fetch that turns a network failure into an ApiError; an abort (stop button) stays an AbortError. */
async function request(path, init) {
  try {
    return await fetch(path, init);
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, "网络错误：无法连接服务器，请检查网络后重试。");
  }
}

/** An ApiError for a response that is not ok. */
async function responseError(res) {
  let data = null;
  try { data = await res.json(); } catch (e) { /* non-JSON body */ }
  return new ApiError(res.status, errorText(data) || res.statusText || "未知错误");
}

/** GET or POST JSON to the API with the stored key; throws ApiError on any failure. */
async function api(path, body, signal) {
  const init = { method: body === undefined ? "GET" : "POST", headers: apiHeaders(body !== undefined), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await request(path, init);
  if (!res.ok) throw await responseError(res);
  try { return await res.json(); } catch (e) { return null; }
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
