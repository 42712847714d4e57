// The twisted-chat wire protocol (docs/protocol.md) over a WebSocket: one frame per
// WebSocket message. Requests carry an id and are answered by exactly one ok or error;
// everything else the server sends is an event. No UI here.

export const PROTOCOL_VERSION = 3;

export class ServerError extends Error {
  constructor(code, text) {
    super(text);
    this.code = code;
    this.text = text;
  }
}

export class Gone extends Error {
  constructor() {
    super("The connection to the server was lost.");
  }
}

export class Link {
  // url: the WebSocket address; onEvent(frame): every event; onClose(): the link ended.
  constructor(url, onEvent, onClose) {
    this.onEvent = onEvent;
    this.onClose = onClose;
    this.nextId = 1;
    this.waiting = new Map();
    this.closed = false;
    this.socket = new WebSocket(url);
    this.opened = new Promise((resolve, reject) => {
      this.socket.addEventListener("open", () => resolve());
      this.socket.addEventListener("error", () => reject(new Gone()));
    });
    this.socket.addEventListener("message", (message) => this.received(message.data));
    this.socket.addEventListener("close", () => this.ended());
  }

  request(type, fields = {}) {
    if (this.closed || this.socket.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Gone());
    }
    const id = this.nextId++;
    this.socket.send(JSON.stringify({ type, ...fields, id }));
    return new Promise((resolve, reject) => this.waiting.set(id, { resolve, reject }));
  }

  received(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // not a frame: the server never sends one, so nothing to show
    }
    if (frame === null || typeof frame !== "object" || typeof frame.type !== "string") {
      return;
    }
    if ((frame.type === "ok" || frame.type === "error") && this.waiting.has(frame.id)) {
      const { resolve, reject } = this.waiting.get(frame.id);
      this.waiting.delete(frame.id);
      if (frame.type === "ok") {
        resolve(frame);
      } else {
        reject(new ServerError(String(frame.code), String(frame.text)));
      }
      return;
    }
    if (frame.type === "ping") {
      this.request("ping").catch(() => {}); // any frame answers; not user activity
      return;
    }
    this.onEvent(frame);
  }

  ended() {
    if (this.closed) {
      return;
    }
    this.closed = true;
    for (const { reject } of this.waiting.values()) {
      reject(new Gone());
    }
    this.waiting.clear();
    this.onClose();
  }

  close() {
    this.closed = true;
    this.socket.close();
  }
}
