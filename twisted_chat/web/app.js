// The twisted-chat page: one more client of the wire protocol (docs/protocol.md), as
// the terminal client is. Everything that came from the network is put on the page as
// text (textContent), never as HTML. The password is kept in memory only, to log in
// again after a lost connection.

import { Gone, Link, PROTOCOL_VERSION, ServerError } from "./protocol.js";

const EVERYONE = "*";
const HISTORY_PAGE = 50;
const MAX_BACKOFF = 30;

const $ = (id) => document.getElementById(id);

const state = {
  link: null,
  me: "",
  password: "",
  newAccount: false,
  online: new Set(),
  conversations: new Map(),
  current: EVERYONE,
  leaving: false, // the user logged out, or was logged out for good: no reconnect
  attempt: 0,
  reconnectTimer: null,
};

// --- conversations -------------------------------------------------------------------

function conversation(key) {
  let found = state.conversations.get(key);
  if (!found) {
    const kind = key === EVERYONE ? "everyone" : key.startsWith("#") ? "room" : "user";
    found = {
      key,
      kind,
      title: key === EVERYONE ? "Everyone" : key,
      lines: [],
      unread: 0,
      seen: new Set(),
      oldest: 0,
      loaded: kind === "everyone", // history fetched once when first opened
      exhausted: kind === "everyone",
    };
    state.conversations.set(key, found);
    renderConversations();
  }
  return found;
}

function clock(sent, withDate) {
  const when = new Date(sent * 1000);
  const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return withDate ? `${when.toLocaleDateString()} ${time}` : time;
}

// A line: {sent, text, kind ("message", "mine", "notice", "away"), msgid}.
function addLine(key, line, { atStart = false, quiet = false } = {}) {
  const target = conversation(key);
  if (line.msgid) {
    if (target.seen.has(line.msgid)) {
      return; // shown already (live, or in an earlier page)
    }
    target.seen.add(line.msgid);
    if (!target.oldest || line.msgid < target.oldest) {
      target.oldest = line.msgid;
    }
  }
  if (atStart) {
    target.lines.unshift(line);
  } else {
    target.lines.push(line);
  }
  if (key === state.current) {
    renderLine(line, atStart);
  } else if (!quiet) {
    target.unread += 1;
    renderConversations();
  }
}

function notice(text, key = EVERYONE) {
  addLine(key, { sent: Date.now() / 1000, text, kind: "notice" });
}

function renderLine(line, atStart = false) {
  const log = $("log");
  const row = document.createElement("p");
  row.className = line.kind;
  const time = document.createElement("time");
  time.textContent = clock(line.sent, line.kind === "away");
  row.append(time, document.createTextNode(line.text));
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  if (atStart) {
    const before = log.scrollHeight;
    log.prepend(row);
    log.scrollTop += log.scrollHeight - before; // keep what was in view in view
  } else {
    log.append(row);
    if (atBottom) {
      log.scrollTop = log.scrollHeight;
    }
  }
}

function open(key) {
  state.current = key;
  const target = conversation(key);
  target.unread = 0;
  $("title").textContent = target.title;
  const log = $("log");
  log.replaceChildren();
  for (const line of target.lines) {
    renderLine(line);
  }
  log.scrollTop = log.scrollHeight;
  renderConversations();
  if (!target.loaded) {
    target.loaded = true;
    loadOlder(target);
  }
  $("message").focus();
}

async function loadOlder(target) {
  if (target.exhausted || !state.link) {
    return;
  }
  try {
    const reply = await state.link.request("history", {
      target: target.key,
      limit: HISTORY_PAGE,
      before: target.oldest,
    });
    const lines = Array.isArray(reply.messages) ? reply.messages : [];
    for (const message of lines.reverse()) {
      addLine(target.key, historyLine(target, message), { atStart: true, quiet: true });
    }
    target.exhausted = !reply.more;
  } catch (error) {
    target.exhausted = true;
    if (error instanceof ServerError && error.code !== "history-off") {
      notice(error.text, target.key);
    }
  }
}

function historyLine(target, message) {
  const sender = String(message.sender);
  const mine = sender === state.me;
  return {
    sent: Number(message.sent),
    msgid: Number(message.msgid),
    kind: mine ? "mine" : "message",
    text: mine ? `you \u2192 ${target.title}: ${String(message.text)}` : `${sender}: ${String(message.text)}`,
  };
}

function renderConversations() {
  const list = $("conversations");
  list.replaceChildren();
  const keys = [EVERYONE, ...[...state.conversations.keys()].filter((k) => k !== EVERYONE).sort()];
  for (const key of keys) {
    const target = conversation(key);
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.key = key;
    const name = document.createElement("span");
    name.textContent = target.title;
    button.append(name);
    if (target.unread) {
      const count = document.createElement("span");
      count.className = "unread";
      count.textContent = String(target.unread);
      count.setAttribute("aria-label", `${target.unread} unread`);
      button.append(count);
    }
    if (key === state.current) {
      button.setAttribute("aria-current", "true");
    }
    button.addEventListener("click", () => open(key));
    item.append(button);
    list.append(item);
  }
}

function renderOnline() {
  const list = $("online");
  list.replaceChildren();
  for (const user of [...state.online].sort()) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = user;
    button.addEventListener("click", () => open(user));
    item.append(button);
    list.append(item);
  }
}

function status(text) {
  $("status").textContent = text;
}

// --- events from the server ------------------------------------------------------------

function onEvent(frame) {
  switch (frame.type) {
    case "presence": {
      const user = String(frame.user);
      if (frame.online) {
        state.online.add(user);
      } else {
        state.online.delete(user);
      }
      renderOnline();
      notice(`${user} logged ${frame.online ? "in" : "out"}`);
      break;
    }
    case "message": {
      const sender = String(frame.sender);
      const away = Boolean(frame.stored);
      const line = {
        sent: Number(frame.sent),
        msgid: Number(frame.msgid || 0),
        kind: away ? "away" : "message",
        text: `${sender}: ${String(frame.text)}${away ? "  (sent while you were away)" : ""}`,
      };
      addLine(sender, line);
      break;
    }
    case "stored-done":
      // Shown, so acknowledged: the server may forget them now.
      state.link.request("received", { upto: Number(frame.upto) }).catch(() => {});
      break;
    case "broadcast":
      addLine(EVERYONE, {
        sent: Number(frame.sent),
        kind: "message",
        text: `${String(frame.sender)} \u2192 all: ${String(frame.text)}`,
      });
      break;
    case "room-message": {
      const away = Boolean(frame.replay);
      addLine(String(frame.room), {
        sent: Number(frame.sent),
        msgid: Number(frame.msgid),
        kind: away ? "away" : "message",
        text: `${String(frame.sender)}: ${String(frame.text)}${away ? "  (sent while you were away)" : ""}`,
      });
      break;
    }
    case "room-member":
      notice(`${String(frame.user)} ${frame.joined ? "joined" : "left"} ${String(frame.room)}`, String(frame.room));
      break;
    case "room-replayed":
      if (Number(frame.more) > 0) {
        notice(`\u2026 ${Number(frame.more)} more: scroll up, or /history`, String(frame.room));
      }
      break;
    case "private-request":
      // A browser cannot take a chat straight between clients: said, and declined.
      notice(`${String(frame.sender)} asked for a private chat, which a browser cannot take.`);
      state.link.request("answerprivate", { user: String(frame.sender), accept: false }).catch(() => {});
      break;
    case "private-unsupported":
      notice(`${String(frame.user)} asked for a private chat, which a browser cannot take.`);
      break;
    case "idle-warning":
      status(`You will be logged out for inactivity in ${Math.round(Number(frame.seconds))} s unless you send something.`);
      break;
    case "logged-out":
      loggedOut(String(frame.reason));
      break;
    case "error":
      notice(`Error from the server: ${String(frame.text)}`);
      break;
    default:
      break; // a later version's event: nothing to show
  }
}

function loggedOut(reason) {
  if (reason === "timeout") {
    state.leaving = true;
    backToLogin("You were logged out: you sent nothing for too long.");
  } else if (reason === "flood") {
    state.leaving = true;
    backToLogin("You were logged out for sending too fast for too long.");
  } else {
    notice(`The server ended your session (${reason}).`);
  }
}

// --- logging in ------------------------------------------------------------------------

function websocketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function connect() {
  return new Promise((resolve, reject) => {
    const link = new Link(websocketUrl(), onEvent, () => lost(link));
    link.opened.then(() => resolve(link), reject);
  });
}

async function signIn(user, password, { again = false, repeat = null } = {}) {
  const link = await connect();
  state.link = link;
  await link.request("hello", { version: PROTOCOL_VERSION });
  const named = await link.request("login", { user });
  if (named.account === "new" && !again) {
    if (repeat === null) {
      state.newAccount = true;
      link.close();
      state.link = null;
      return "repeat";
    }
    if (repeat !== password) {
      throw new ServerError("mismatch", "The two passwords differ. Type them again.");
    }
  }
  await link.request("password", { password });
  return "in";
}

async function welcome(user, password) {
  state.me = user;
  state.password = password;
  state.leaving = false;
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  $("me").textContent = user;
  const accounts = await state.link.request("accounts");
  state.online = new Set(Array.isArray(accounts.online) ? accounts.online.map(String) : []);
  for (const room of Array.isArray(accounts.rooms) ? accounts.rooms : []) {
    conversation(String(room));
  }
  renderOnline();
  renderConversations();
  if (!state.conversations.get(state.current)) {
    state.current = EVERYONE;
  }
  open(state.current);
}

function showLoginError(text) {
  $("login-error").textContent = text;
}

async function loginSubmitted(event) {
  event.preventDefault();
  const user = $("username").value.trim();
  const password = $("password").value;
  showLoginError("");
  if (!user || !password) {
    showLoginError("Type a username and a password.");
    return;
  }
  const repeat = $("repeat-row").hidden ? null : $("repeat").value;
  try {
    const outcome = await signIn(user, password, { repeat });
    if (outcome === "repeat") {
      $("repeat-row").hidden = false;
      showLoginError(`${user} is a new user: type the password again to create the account.`);
      $("repeat").focus();
      return;
    }
    $("password").value = "";
    $("repeat").value = "";
    $("repeat-row").hidden = true;
    await welcome(user, password);
  } catch (error) {
    if (state.link) {
      state.link.close();
      state.link = null;
    }
    showLoginError(error instanceof ServerError ? error.text : "The server cannot be reached. Try again in a moment.");
  }
}

function backToLogin(why) {
  if (state.link) {
    state.link.close();
    state.link = null;
  }
  state.password = "";
  clearTimeout(state.reconnectTimer);
  $("chat-view").hidden = true;
  $("login-view").hidden = false;
  $("username").value = state.me;
  showLoginError(why);
  $("password").focus();
}

// --- a lost connection -------------------------------------------------------------------

function lost(link) {
  if (link !== state.link || state.leaving) {
    return;
  }
  state.link = null;
  notice("The connection to the server was lost.");
  scheduleReconnect();
}

function scheduleReconnect() {
  const base = Math.min(MAX_BACKOFF, 2 ** state.attempt);
  const delay = base * (0.8 + Math.random() * 0.4); // jitter: not everyone at once
  state.attempt += 1;
  status(`Reconnecting in ${Math.ceil(delay)} s\u2026`);
  state.reconnectTimer = setTimeout(reconnect, delay * 1000);
}

async function reconnect() {
  try {
    await signIn(state.me, state.password, { again: true });
    state.attempt = 0;
    status("");
    notice("reconnected");
    await welcome(state.me, state.password);
  } catch (error) {
    if (state.link) {
      state.link.close();
      state.link = null;
    }
    if (error instanceof ServerError && ["wrong-password", "locked", "invalid-username"].includes(error.code)) {
      state.leaving = true;
      backToLogin(error.text);
      return;
    }
    scheduleReconnect();
  }
}

// --- sending -----------------------------------------------------------------------------

const HELP = [
  "Commands: /join #room, /leave #room, /rooms, /members [#room], /block user, /unblock user,",
  "/whoelse, /whoelsesince seconds, /history [user or #room] [count], /logout, /help.",
  "Anything else goes to the open conversation: Everyone, a room, or a person.",
];

async function command(text) {
  const [word, ...rest] = text.slice(1).trim().split(/\s+/);
  const arg = rest[0] || "";
  const link = state.link;
  switch (word) {
    case "help":
      HELP.forEach((line) => notice(line, state.current));
      return;
    case "logout":
      await logout();
      return;
    case "join": {
      const reply = await link.request("join", { room: arg });
      conversation(String(reply.room));
      open(String(reply.room));
      notice(`You joined ${reply.room}: ${reply.members} member(s).`, String(reply.room));
      return;
    }
    case "leave": {
      const reply = await link.request("leave", { room: arg });
      notice(`You left ${reply.room}.`, String(reply.room));
      return;
    }
    case "rooms": {
      const reply = await link.request("rooms");
      const rooms = Array.isArray(reply.rooms) ? reply.rooms : [];
      notice(rooms.length ? rooms.map((r) => `${r.room} (${r.members} members, ${r.unread} unread)`).join(", ") : "You are in no room.", state.current);
      return;
    }
    case "members": {
      const room = arg || (state.current.startsWith("#") ? state.current : "");
      const reply = await link.request("members", { room });
      const names = (Array.isArray(reply.members) ? reply.members : []).map((m) => `${m.user}${m.online ? " (online)" : ""}`);
      notice(`${room}: ${names.join(", ")}`, state.current);
      return;
    }
    case "block":
    case "unblock":
      await link.request(word, { user: arg });
      notice(`${arg} is ${word}ed`, state.current);
      return;
    case "whoelse": {
      const reply = await link.request("whoelse");
      notice(reply.users.length ? reply.users.join(", ") : "No other users are online.", state.current);
      return;
    }
    case "whoelsesince": {
      const reply = await link.request("whoelsesince", { seconds: Number.parseInt(arg, 10) || 0 });
      notice(reply.users.length ? reply.users.join(", ") : `Nobody else was online in the last ${arg} seconds.`, state.current);
      return;
    }
    case "history": {
      const target = arg && !/^\d+$/.test(arg) ? arg : state.current;
      if (target === EVERYONE) {
        notice("Broadcasts are not kept: open a room or a person for their history.", state.current);
        return;
      }
      conversation(target).loaded = true;
      if (target !== state.current) {
        open(target);
      }
      await loadOlder(conversation(target));
      return;
    }
    default:
      notice(`Unknown command: /${word}. Type /help.`, state.current);
  }
}

async function send(event) {
  event.preventDefault();
  const box = $("message");
  const text = box.value.trim();
  if (!text) {
    return;
  }
  if (!state.link) {
    status("Not connected: your message stays here, to send once the page is back.");
    return;
  }
  try {
    if (text.startsWith("/")) {
      await command(text);
    } else if (state.current === EVERYONE) {
      const reply = await state.link.request("broadcast", { text });
      addLine(EVERYONE, { sent: Date.now() / 1000, kind: "mine", text: `you \u2192 all: ${text}` });
      if (reply.skipped) {
        notice("Your message could not be delivered to some recipients.");
      }
    } else {
      const reply = await state.link.request("message", { to: state.current, text });
      addLine(state.current, { sent: Date.now() / 1000, kind: "mine", msgid: Number(reply.msgid || 0), text: `you \u2192 ${state.current}: ${text}` });
      if (reply.stored) {
        notice(`${state.current} is offline; they will get it when they log in.`, state.current);
      }
    }
    box.value = ""; // only once the server took it: a lost connection keeps what was typed
  } catch (error) {
    if (error instanceof ServerError) {
      notice(error.text, state.current);
      box.value = "";
    } else if (!(error instanceof Gone)) {
      notice(`Something went wrong: ${error.message}`, state.current);
    }
  }
}

async function logout() {
  state.leaving = true;
  try {
    await state.link.request("logout");
  } catch {
    // gone already: logged out either way
  }
  backToLogin("You have logged out.");
  state.me = "";
  state.conversations.clear();
  state.online.clear();
  state.current = EVERYONE;
}

// --- wiring --------------------------------------------------------------------------------

$("login-form").addEventListener("submit", loginSubmitted);
$("send-form").addEventListener("submit", send);
$("logout").addEventListener("click", logout);
$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault(); // a message is one line: Enter sends, Shift+Enter too
    $("send-form").requestSubmit();
  }
});
$("log").addEventListener("scroll", () => {
  const target = state.conversations.get(state.current);
  if ($("log").scrollTop === 0 && target && target.loaded && !target.exhausted) {
    loadOlder(target);
  }
});
$("username").focus();
