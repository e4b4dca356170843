/* The app's module system as hosts see it: `window.require(name)` for a module already
 * registered, which throws `Requiring unknown module "<name>"` otherwise; `window.__d` that
 * bundles define modules with; `require("__debug").modulesMap`. Modules are registered
 * gradually, so a host that requires too early gets the exception. */

const modulesMap = Object.create(null);
const listeners = [];

function record(name, exports, defaultExport, factory) {
  return {
    id: name,
    dependencies: [],
    factory: factory || null,
    exports,
    defaultExport,
    hasError: false,
    refcount: 0,
  };
}

/* Register `name`: require() returns `defaultExport` when there is one, else `exports`. */
export function register(name, exports, defaultExport) {
  modulesMap[name] = record(name, exports, defaultExport);
  for (const fn of listeners) fn(name);
}

export function registered(name) {
  return Object.prototype.hasOwnProperty.call(modulesMap, name);
}

export function onRegister(fn) { listeners.push(fn); }

export function install() {
  function require(name) {
    const m = Object.prototype.hasOwnProperty.call(modulesMap, name) ? modulesMap[name] : null;
    if (!m) throw new Error(`Requiring unknown module "${name}"`);
    m.refcount++;
    return m.defaultExport !== undefined ? m.defaultExport : m.exports;
  }
  function __d(name, deps, factory) {
    const exports = {};
    const module = { exports };
    factory(window, require, require, require, module, exports);
    modulesMap[name] = record(name, module.exports, undefined, factory);
    modulesMap[name].dependencies = deps || [];
  }
  Object.defineProperty(window, "require", { value: require, writable: true, configurable: true });
  Object.defineProperty(window, "__d", { value: __d, writable: true, configurable: true });
}

export function registerDebug() {
  register("__debug", { modulesMap });
}
