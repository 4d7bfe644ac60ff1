"""The report's files: a writer that puts every file in place atomically, and the HTML of one self-contained page.

The page needs nothing from the network: CSS and JavaScript are inline, pictures are files next to it. Galleries lay
a transparent label layer (PNG, background alpha 0) over each photo; one slider sets the layer's CSS opacity, class
chips filter the items, a select sorts them. Opened with `?selftest=1` the page checks itself (every image decoded,
the class filter changes what is shown, sorting orders, the slider works, no error or console.error) and writes the
result as JSON into `<pre id="selftest">` — what tests/test_visualize.py reads through headless Chromium.
"""
from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from data.classes import CLASSES
from data.io import atomic_write_bytes
from viz import ReportError, draw

IMG_DIR = "img"
GENERATOR = '<meta name="generator" content="trashseg visualize.py">'


def esc(s) -> str:
    return html.escape(str(s), quote=True)


def safe_name(s: str, limit: int = 60) -> str:
    """A file-name-safe slug of an image id (the caller adds an index, so two ids never collide)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(s)[0]).strip("._")
    return s[-limit:] or "img"


class SiteWriter:
    """Writes files under `out`, each via temp file + os.replace; `finish` writes index.html last and removes files
    under img/ that this build did not write (left over from an earlier build), so the folder matches the page."""

    def __init__(self, out: str):
        self.out = os.path.abspath(out)
        self.written: set[str] = set()
        index = os.path.join(self.out, "index.html")
        if os.path.isdir(self.out) and os.listdir(self.out):
            # finish() deletes unknown files under img/: only ever in a folder that holds one of our reports
            ours = os.path.isfile(index) and GENERATOR in open(index, encoding="utf-8", errors="replace").read(4096)
            if not ours:
                raise ReportError(f"{out}: exists, is not empty and holds no trashseg report; choose a new folder")
        os.makedirs(self.out, exist_ok=True)
        if not os.path.isfile(index):  # claim the folder first, so a build that dies half-way can be rerun into it
            atomic_write_bytes(index, f"<!doctype html><html><head>{GENERATOR}</head><body>report being built"
                                      f"</body></html>\n".encode())

    def bytes(self, rel: str, data: bytes) -> str:
        atomic_write_bytes(os.path.join(self.out, rel), data)
        self.written.add(os.path.normpath(rel))
        return rel.replace(os.sep, "/")

    def image(self, rel: str, img: np.ndarray, quality: int = 85) -> str:
        """Save an RGB/RGBA array; the extension of `rel` (.jpg or .png) picks the format."""
        return self.bytes(rel, draw.encode(img, os.path.splitext(rel)[1].lower(), quality))

    def finish(self, page_html: str) -> str:
        self.bytes("index.html", page_html.encode("utf-8"))
        img_root = os.path.join(self.out, IMG_DIR)
        for dirpath, _, files in os.walk(img_root, topdown=False):
            for f in files:
                rel = os.path.normpath(os.path.relpath(os.path.join(dirpath, f), self.out))
                if rel not in self.written:
                    os.unlink(os.path.join(dirpath, f))
            if dirpath != img_root and not os.listdir(dirpath):
                os.rmdir(dirpath)
        return os.path.join(self.out, "index.html")


# ------------------------------------------------------------------------------------------------ HTML pieces
def rgb_css(c) -> str:
    return f"rgb({int(c[0])},{int(c[1])},{int(c[2])})"


def table(head: Sequence[str], rows: Sequence[Sequence], cls: str = "") -> str:
    """Cells are escaped unless they are `Raw`."""
    def cell(v, tag):
        return f"<{tag}>{v if isinstance(v, Raw) else esc(v)}</{tag}>"
    h = "".join(cell(x, "th") for x in head)
    body = "".join("<tr>" + "".join(cell(x, "td") for x in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


class Raw(str):
    """HTML that must not be escaped."""


def bar(value: float | None, vmax: float, color, text: str) -> Raw:
    """An inline horizontal bar with its value written next to it."""
    if value is None or not np.isfinite(value):
        return Raw('<span class="na">n/a</span>')
    pct = 0.0 if vmax <= 0 else max(0.0, min(1.0, value / vmax)) * 100
    return Raw(f'<span class="bar"><span style="width:{pct:.1f}%;background:{rgb_css(color)}"></span></span>'
               f'<span class="num">{esc(text)}</span>')


def swatch(class_id: int) -> Raw:
    c = draw.LUT[class_id]
    return Raw(f'<span class="sw" style="background:{rgb_css(c)}"></span>')


def class_label(class_id: int) -> Raw:
    return Raw(f"{swatch(class_id)}{esc(CLASSES[class_id])}")


def legend_html(class_ids: Sequence[int] | None = None, ignore: bool = True) -> str:
    ids = range(len(CLASSES)) if class_ids is None else class_ids
    parts = [f'<span class="lg">{swatch(i)}{i} {esc(CLASSES[i])}</span>' for i in ids]
    if ignore:
        parts.append('<span class="lg"><span class="sw" style="background:#fff"></span>255 ignored</span>')
    return '<div class="legend">' + "".join(parts) + "</div>"


def error_legend_html() -> str:
    parts = [f'<span class="lg"><span class="sw" style="background:{rgb_css(c)}"></span>{esc(n)}</span>'
             for n, c in draw.ERROR_LEGEND]
    return '<div class="legend">' + "".join(parts) + "</div>"


def figure(src: str, caption: str = "", alt: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure class="fig"><img src="{esc(src)}" alt="{esc(alt or caption)}">{cap}</figure>'


@dataclass
class Panel:
    """One picture of a gallery item: a photo, optionally with a label layer on top (same size)."""
    base: str
    width: int
    height: int
    layer: str | None = None
    label: str = ""


@dataclass
class Item:
    panels: list[Panel]
    caption: str                          # HTML
    classes: Sequence[int] = ()           # what the class filter matches
    keys: dict = field(default_factory=dict)  # sort keys, e.g. {"objects": 3, "iou": 0.41}


def gallery(gid: str, items: Sequence[Item], sorts: Sequence[tuple[str, str, int]] = (),
            opacity: float = 0.6) -> str:
    """A filterable, sortable gallery. `sorts` = (key, label, direction: 1 ascending / −1 descending); file order is
    always offered first. Class chips list the classes found in the items with how many items hold each."""
    counts = np.zeros(len(CLASSES), np.int64)
    for it in items:
        for c in set(it.classes):
            if 0 <= c < len(CLASSES):
                counts[c] += 1
    chips = "".join(
        f'<button type="button" class="chip" data-cls="{c}" aria-pressed="false" title="{int(counts[c])} items">'
        f'{swatch(c)}{esc(CLASSES[c])} <small>{int(counts[c])}</small></button>'
        for c in range(1, len(CLASSES)) if counts[c])
    opts = '<option value="order" data-dir="1">file order</option>' + "".join(
        f'<option value="{esc(k)}" data-dir="{d}">{esc(lab)}</option>' for k, lab, d in sorts)
    has_layer = any(p.layer for it in items for p in it.panels)
    slider = (f'<label>overlay opacity <input type="range" class="opacity" min="0" max="100" '
              f'value="{round(opacity * 100)}"> <output>{round(opacity * 100)}%</output></label>') if has_layer else ""
    figs = []
    for k, it in enumerate(items):
        keys = {"order": k, **it.keys}
        data = " ".join(f'data-{esc(n)}="{esc(v)}"' for n, v in keys.items())
        cls = " ".join(str(int(c)) for c in sorted(set(it.classes)) if 0 < c < len(CLASSES))
        stacks = []
        for p in it.panels:
            layer = (f'<img class="ov" src="{esc(p.layer)}" width="{p.width}" height="{p.height}" alt="" '
                     f'loading="lazy">') if p.layer else ""
            lab = f'<span class="plabel">{esc(p.label)}</span>' if p.label else ""
            stacks.append(f'<div class="stack"><img class="base" src="{esc(p.base)}" width="{p.width}" '
                          f'height="{p.height}" alt="{esc(p.label)}" loading="lazy">{layer}{lab}</div>')
        figs.append(f'<figure class="item" data-classes=" {cls} " {data}><div class="panels">{"".join(stacks)}'
                    f'</div><figcaption>{it.caption}</figcaption></figure>')
    size = ('<label>size <input type="range" class="tsize" min="120" max="512" step="10" value="220"></label>')
    return (f'<div class="gblock" data-gallery="{esc(gid)}"><div class="controls">{slider}{size}'
            f'<label>sort <select class="sort">{opts}</select></label>'
            f'<label>match <select class="match"><option value="any">any selected class</option>'
            f'<option value="all">all selected classes</option></select></label>'
            f'<button type="button" class="clear">show all</button> <span class="count"></span>'
            f'<div class="chips">{chips}</div></div>'
            f'<div class="gallery" style="--op:{opacity}">{"".join(figs)}</div></div>')


# ------------------------------------------------------------------------------------------------ the page
CSS = """
:root{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;background:#f4f4f6}
body{margin:0}header{background:#1d2433;color:#fff;padding:14px 24px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:#c9cfdb;font-size:13px}nav a{color:#9cc3ff;margin-right:14px;font-size:14px}
main{padding:8px 24px 40px;max-width:1500px}section{background:#fff;border-radius:8px;padding:6px 18px 18px;
margin:16px 0;box-shadow:0 1px 3px rgba(0,0,0,.12)}h2{border-bottom:1px solid #ddd;padding-bottom:6px}
h3{margin:18px 0 8px}.note{color:#555;font-size:13px}.warn{color:#a33;font-size:14px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{padding:3px 9px;border-bottom:1px solid #eee;
text-align:left;vertical-align:middle}th{background:#fafafa}td.r,th.r{text-align:right}
.bar{display:inline-block;width:160px;height:11px;background:#eee;vertical-align:middle;margin-right:6px}
.bar span{display:block;height:100%;outline:1px solid rgba(0,0,0,.35)}.num{font-variant-numeric:tabular-nums}
.na{color:#999}.sw{display:inline-block;width:13px;height:13px;border:1px solid #777;vertical-align:-2px;
margin-right:5px}.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:13px;margin:6px 0}
.figs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}.fig{margin:0}.fig img{max-width:100%;
border:1px solid #ddd}.fig figcaption{font-size:12px;color:#555}
.controls{position:sticky;top:0;z-index:2;background:#fff;padding:8px 0;border-bottom:1px solid #eee;font-size:13px}
.controls label{margin-right:16px}.chips{margin-top:6px}.chip{border:1px solid #bbb;background:#f7f7f7;
border-radius:12px;padding:2px 9px;margin:2px;cursor:pointer;font-size:12px}.chip.on{background:#1d2433;color:#fff}
.gallery{display:flex;flex-wrap:wrap;gap:10px;margin-top:10px}.item{margin:0;background:#fafafa;
border:1px solid #e3e3e3;border-radius:6px;padding:5px;max-width:100%}.item[hidden]{display:none}
.panels{display:flex;gap:4px}.stack{position:relative;line-height:0;cursor:zoom-in}
.stack img{display:block;width:auto;height:auto;max-width:100%}.stack .base{width:var(--tw,220px);height:auto}
.stack .ov{position:absolute;left:0;top:0;width:100%;height:100%;opacity:var(--op);image-rendering:pixelated}
.item.big .stack .base{width:min(var(--nw,512px),90vw)}.plabel{position:absolute;left:3px;top:3px;
background:rgba(0,0,0,.6);color:#fff;font-size:11px;line-height:14px;padding:0 4px;border-radius:3px}
.item figcaption{font-size:12px;max-width:var(--tw,220px);margin-top:4px;word-break:break-all}
.item.big figcaption{max-width:none}.cl{white-space:nowrap;margin-right:6px}
pre#selftest{white-space:pre-wrap;font-size:12px}
"""

# Installed first in <head>, so errors in any later script (even a syntax error) and failed image loads are caught.
JS_CAPTURE = """
(function(){var E=window.__reportErrors=[];
window.addEventListener('error',function(e){var t=e.target;
 if(t&&t!==window&&t.tagName){E.push('failed to load '+t.tagName.toLowerCase()+' '+(t.getAttribute('src')||''));}
 else{E.push('error: '+(e.message||e)+(e.filename?' at '+e.filename+':'+e.lineno:''));}},true);
window.addEventListener('unhandledrejection',function(e){E.push('unhandled rejection: '+e.reason);});
var ce=console.error;console.error=function(){E.push('console.error: '+[].map.call(arguments,String).join(' '));
 return ce.apply(console,arguments);};})();
"""

JS_MAIN = """
(function(){
function visibleItems(g){return [].filter.call(g.children,function(it){return !it.hidden;});}
document.querySelectorAll('[data-gallery]').forEach(function(block){
 var gal=block.querySelector('.gallery'),items=[].slice.call(gal.children),active=[];
 var match=block.querySelector('.match'),sort=block.querySelector('.sort'),op=block.querySelector('.opacity');
 var count=block.querySelector('.count');
 function apply(){var n=0;items.forEach(function(it){var have=it.getAttribute('data-classes');
  var hit=function(c){return have.indexOf(' '+c+' ')>=0;};
  var ok=!active.length||(match.value==='all'?active.every(hit):active.some(hit));it.hidden=!ok;if(ok)n++;});
  count.textContent='showing '+n+' of '+items.length;}
 block.querySelectorAll('.chip').forEach(function(ch){ch.addEventListener('click',function(){
  var c=ch.getAttribute('data-cls'),k=active.indexOf(c);if(k>=0)active.splice(k,1);else active.push(c);
  ch.classList.toggle('on',k<0);ch.setAttribute('aria-pressed',String(k<0));apply();});});
 block.querySelector('.clear').addEventListener('click',function(){active=[];
  block.querySelectorAll('.chip').forEach(function(ch){ch.classList.remove('on');
   ch.setAttribute('aria-pressed','false');});
  apply();});
 match.addEventListener('change',apply);
 sort.addEventListener('change',function(){var o=sort.options[sort.selectedIndex],key=o.value;
  var dir=+o.getAttribute('data-dir');
  var v=function(it){var x=parseFloat(it.getAttribute('data-'+key));return isNaN(x)?Infinity:x;};
  var ord=function(it){return +it.getAttribute('data-order');};
  items.slice().sort(function(a,b){return (v(a)-v(b))*dir||ord(a)-ord(b);})
   .forEach(function(it){gal.appendChild(it);});});
 var ts=block.querySelector('.tsize');ts.addEventListener('input',function(){
  gal.style.setProperty('--tw',ts.value+'px');});
 if(op){var out=op.parentNode.querySelector('output');op.addEventListener('input',function(){
  gal.style.setProperty('--op',String(op.value/100));out.textContent=op.value+'%';});}
 gal.addEventListener('click',function(e){var s=e.target.closest('.stack');if(!s)return;
  var it=s.closest('.item');it.style.setProperty('--nw',s.querySelector('.base').naturalWidth+'px');
  it.classList.toggle('big');});
 apply();});
window.reportVisibleItems=visibleItems;
})();
"""

JS_SELFTEST = """
(function(){
if(!/[?&]selftest=1/.test(location.search))return;
function report(res){var p=document.getElementById('selftest');p.hidden=false;p.textContent=JSON.stringify(res,null,1);
 document.title=res.ok?'SELFTEST PASS':'SELFTEST FAIL';}
function shown(el){return el.getClientRects().length>0;}
function fire(el,type){el.dispatchEvent(new Event(type,{bubbles:true}));}
function run(){var res={ok:false,images:0,broken:[],errors:[],checks:[]};
 function check(name,ok,detail){res.checks.push({name:name,ok:!!ok,detail:detail||''});}
 try{
  var imgs=[].slice.call(document.images);res.images=imgs.length;
  imgs.forEach(function(im){if(!(im.complete&&im.naturalWidth>0))res.broken.push(im.getAttribute('src'));});
  var filtered=0;
  document.querySelectorAll('[data-gallery]').forEach(function(block){
   var gid=block.getAttribute('data-gallery'),gal=block.querySelector('.gallery'),items=[].slice.call(gal.children);
   var total=items.filter(shown).length;
   check(gid+': all items shown at start',total===items.length,total+'/'+items.length);
   block.querySelectorAll('.chip').forEach(function(ch){
    var c=ch.getAttribute('data-cls'),want=items.filter(function(it){
     return it.getAttribute('data-classes').indexOf(' '+c+' ')>=0;}).length;
    if(want===0||want===items.length)return;
    ch.click();var vis=items.filter(shown);
    var right=vis.length===want&&vis.every(function(it){return it.getAttribute('data-classes').indexOf(' '+c+' ')>=0;});
    check(gid+': filter class '+c,right&&vis.length<total,vis.length+' shown, '+want+' expected of '+total);
    ch.click();check(gid+': filter class '+c+' off',items.filter(shown).length===total,'');filtered++;});
   var sort=block.querySelector('.sort');
   for(var k=1;k<sort.options.length;k++){sort.selectedIndex=k;fire(sort,'change');
    var key=sort.options[k].value,dir=+sort.options[k].getAttribute('data-dir');
    var vals=[].filter.call(gal.children,shown).map(function(it){return parseFloat(it.getAttribute('data-'+key));});
    var sorted=vals.every(function(x,i){return i===0||(x-vals[i-1])*dir>=0||isNaN(x)||isNaN(vals[i-1]);});
    check(gid+': sort by '+key,sorted,vals.slice(0,12).join(','));}
   sort.selectedIndex=0;fire(sort,'change');
   var op=block.querySelector('.opacity'),ov=gal.querySelector('.ov');
   if(op&&ov){var v0=op.value;op.value='25';fire(op,'input');var o=parseFloat(getComputedStyle(ov).opacity);
    check(gid+': opacity slider',Math.abs(o-0.25)<0.02,'opacity '+o);op.value=v0;fire(op,'input');}
  });
  check('class filter exercised at least once',filtered>0,filtered+' filter clicks');
 }catch(e){res.errors.push('selftest threw: '+e);}
 res.errors=res.errors.concat(window.__reportErrors||[]);
 res.ok=res.images>0&&res.broken.length===0&&res.errors.length===0&&res.checks.every(function(c){return c.ok;});
 report(res);}
window.addEventListener('load',function(){
 var imgs=[].slice.call(document.images);
 var waits=imgs.map(function(im){if(im.loading==='lazy')im.loading='eager';if(im.complete)return Promise.resolve();
  return new Promise(function(r){im.addEventListener('load',r);im.addEventListener('error',r);});});
 var timeout=new Promise(function(r){setTimeout(r,8000);});
 Promise.race([Promise.all(waits),timeout]).then(run);});
})();
"""


def page(title: str, subtitle_lines: Sequence[str], sections: Sequence[tuple[str, str, str]]) -> str:
    """sections: (anchor id, heading, inner HTML)."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(h)}</a>' for a, h, _ in sections)
    subs = "".join(f"<p>{esc(s)}</p>" for s in subtitle_lines)
    body = "".join(f'<section id="{esc(a)}"><h2>{esc(h)}</h2>{inner}</section>' for a, h, inner in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">{GENERATOR}'
            f"<title>{esc(title)}</title><script>{JS_CAPTURE}</script><style>{CSS}</style></head>\n"
            f"<body><header><h1>{esc(title)}</h1>{subs}<nav>{nav}</nav></header>\n<main>{body}\n"
            f'<pre id="selftest" hidden></pre></main>\n<script>{JS_MAIN}</script>\n<script>{JS_SELFTEST}</script>\n'
            f"</body></html>\n")


def json_block(obj) -> str:
    return f'<pre class="note">{esc(json.dumps(obj, indent=1, default=str))}</pre>'
