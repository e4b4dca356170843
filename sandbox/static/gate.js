/* The page's own browser check, repeating the server's on what the browser reports of itself:
 * navigator.userAgent, navigator.userAgentData.brands, and (a knob) navigator.webdriver. */

const CHROMIUM_BRANDS = ["Chromium", "Google Chrome", "Microsoft Edge"];

export function refusal(nav, { minChrome, refuseWebdriver }) {
  const ua = String(nav.userAgent || "");
  if (ua.includes("HeadlessChrome")) return "a headless browser";
  const chrome = /\b(?:Chrome|CriOS)\/(\d+)/.exec(ua);
  if (chrome && Number(chrome[1]) < minChrome) return `Chrome ${chrome[1]} is too old`;
  const brands = (nav.userAgentData && nav.userAgentData.brands) || [];
  for (const { brand, version } of brands) {
    if (brand === "HeadlessChrome") return "a headless browser (brands)";
    if (CHROMIUM_BRANDS.includes(brand) && Number(version) < minChrome) return `${brand} ${version} is too old`;
  }
  if (refuseWebdriver && nav.webdriver === true) return "a browser under automation (webdriver)";
  return null;
}

/* Replace the app with the update page, as the server would have served it. */
export function showUpdatePage() {
  const main = document.createElement("main");
  main.id = "update-browser";
  const h1 = document.createElement("h1");
  h1.textContent = "WhatsApp works with Google Chrome 120 and newer";
  const p = document.createElement("p");
  p.textContent = "To use WhatsApp, update Chrome or use Mozilla Firefox, Safari, Microsoft Edge or Opera.";
  const a = document.createElement("a");
  a.href = "https://www.google.com/chrome/";
  a.textContent = "Update Google Chrome";
  main.append(h1, p, a);
  document.body.replaceChildren(main);
  document.title = "WhatsApp";
}
