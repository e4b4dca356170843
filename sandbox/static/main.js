/* WhatsApp Web (sandbox): boot. The browser check comes first; then the module system, the app's
 * version (window.Debug.VERSION), the modules in waves, the heap a real tab holds and its script
 * bundle, and only then the connection and its first QR code or login: nothing the app does
 * involves a module before that module is registered, as on the real page, where the code that
 * shows a QR or adds a message is itself in those modules. */
import { refusal, showUpdatePage } from "./gate.js";
import { install } from "./loader.js";
import { Backend } from "./login.js";
import { registerModules } from "./modules.js";
import { startApp } from "./connection.js";
import { View } from "./view.js";
import { holdHeap } from "./weight.js";

const boot = JSON.parse(document.getElementById("boot").textContent);

function sleep(seconds) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, seconds * 1000)));
}

function loadBundle(src) {
  if (!src) return Promise.resolve();
  return new Promise((resolve) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = () => resolve();
    script.onerror = () => { console.error("the app bundle did not load"); resolve(); };
    document.head.append(script);
  });
}

async function main() {
  const why = refusal(navigator, boot);
  if (why !== null) {
    console.warn("WhatsApp Web does not run in this browser:", why);
    showUpdatePage();
    return;
  }
  install();
  // The bundle is requested now, so that the page's load event waits for it.
  const bundle = loadBundle(boot.bundle);
  await sleep(boot.loadDelay);
  window.Debug = { VERSION: boot.version };
  const modules = registerModules();
  const heap = holdHeap(boot.heapMb);
  const backend = new Backend();
  const view = new View(boot.legacyQrDom);
  await Promise.all([heap, bundle, modules]);
  await startApp({ backend, view, boot });
}

main().catch((e) => console.error("sandbox page failed to start:", e));
