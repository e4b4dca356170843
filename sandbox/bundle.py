"""The app's script bundle: generated code the page loads and runs, standing in for the megabytes
of JavaScript the real page parses and compiles. Each module is defined through `__d` as the real
bundles do, with its own strings and functions, so nothing is shared or deduplicated."""

from __future__ import annotations

import functools
import hashlib

MODULE_PREFIX = "WAWebBundled"


def _module(n: int) -> str:
    seed = hashlib.blake2b(n.to_bytes(4, "big"), digest_size=24).hexdigest()
    words = [seed[i : i + 8] for i in range(0, 48, 8)]
    strings = ",".join(f'"{w}-{n}-{k}"' for k, w in enumerate(words))
    cases = "".join(
        f'case {k}:return s[{k}]+e*{(n + k) % 97 + 3}+"{words[k][:4]}";' for k in range(6)
    )
    table = ",".join(str((n * 7919 + k * 104729) % 1000003) for k in range(24))
    return (
        f'__d("{MODULE_PREFIX}{n:05d}",[],(function(t,n,r,o,a,i){{"use strict";'
        f"var s=[{strings}],c=[{table}];"
        f"function l(e){{switch(e%6){{{cases}default:return String(e)}}}}"
        f"function u(e,t){{var n={{id:e,key:t,value:l(e),weight:c[e%c.length],"
        f"flags:(e*{n % 13 + 1})&255}};return n.weight>{n % 500000}?n:null}}"
        f"function d(e){{var t=[];for(var n=0;n<e;n++){{var r=u(n,s[n%s.length]);"
        f"r&&t.push(r)}}return t}}"
        f"i.build=d;i.describe=l;i.size=c.length;i.name=s[0]}}),1);\n"
    )


@functools.lru_cache(maxsize=4)
def bundle(kilobytes: int) -> bytes:
    """A bundle of about `kilobytes` KB of module definitions."""
    parts: list[str] = ["/* WhatsApp Web (sandbox): app bundle */\n"]
    size = len(parts[0])
    n = 0
    target = kilobytes * 1024
    while size < target:
        module = _module(n)
        parts.append(module)
        size += len(module)
        n += 1
    return "".join(parts).encode()
