/* What the page shows. The QR is drawn on a canvas; the payload is in div[data-ref] only with
 * the legacy_qr_dom knob, as the page was before 2024. */

const $ = (id) => document.getElementById(id);
const VIEWS = ["startup", "landing", "passkey", "main", "ended"];

const END_TEXT = {
  DEPRECATED_VERSION: "This version of WhatsApp Web is out of date. Reload the page to update.",
  TOS_BLOCK: "This account is not allowed to use WhatsApp.",
  SMB_TOS_BLOCK: "This business account is not allowed to use WhatsApp Business.",
  PROXYBLOCK: "WhatsApp Web can't connect through this network. Check your proxy settings.",
  UNLAUNCHED: "WhatsApp Web is not available right now.",
  CONFLICT: "WhatsApp is open on another computer or browser. This window has stopped.",
};

export class View {
  constructor(legacyQrDom) {
    this.legacy = legacyQrDom;
  }

  show(id) {
    for (const view of VIEWS) $(view).hidden = view !== id;
  }

  #box() {
    let box = $("qr-slot").firstElementChild;
    if (!box) {
      box = document.createElement("div");
      box.className = "qr-box";
      if (this.legacy) box.setAttribute("data-ref", "");
      $("qr-slot").append(box);
    }
    return box;
  }

  drawQr(payload) {
    const box = this.#box();
    if (this.legacy) box.setAttribute("data-ref", payload);
    const canvas = document.createElement("canvas");
    canvas.width = 264;
    canvas.height = 264;
    canvas.setAttribute("aria-label", "Scan this QR code to link a device!");
    canvas.setAttribute("role", "img");
    box.replaceChildren(canvas);
    const image = new Image();
    image.onload = () => {
      const ctx = canvas.getContext("2d");
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
    };
    image.src = "/qr.png?code=" + encodeURIComponent(payload);
    this.show("landing");
  }

  showRetry(onClick) {
    const box = this.#box();
    if (this.legacy) box.setAttribute("data-ref", "");
    const span = document.createElement("span");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Click to reload QR code";
    button.addEventListener("click", () => { button.disabled = true; onClick(); });
    span.append(button);
    box.replaceChildren(span);
    this.show("landing");
  }

  removeQr() {
    $("qr-slot").replaceChildren();
  }

  loading(percent) {
    $("progress").value = percent;
    $("progress-text").textContent = `Loading your chats [${percent}%]`;
    $("loading").hidden = percent >= 100;
  }

  hideLoading() { $("loading").hidden = true; }

  passkey(text) {
    $("passkey-text").textContent = text;
    this.removeQr();
    this.show("passkey");
  }

  ended(state) {
    this.removeQr();
    this.hideLoading();
    $("ended-text").textContent = END_TEXT[state] || state;
    this.show("ended");
  }

  addMessage(from, body) {
    const row = document.createElement("div");
    row.className = "chat-row";
    row.setAttribute("role", "row");
    row.dataset.from = from;
    const who = document.createElement("span");
    who.className = "from";
    who.textContent = "+" + from;
    const text = document.createElement("span");
    text.className = "body";
    text.textContent = body;
    row.append(who, text);
    $("chat-list").prepend(row);
  }

  reset() {
    this.removeQr();
    $("chat-list").replaceChildren();
    this.hideLoading();
  }
}
