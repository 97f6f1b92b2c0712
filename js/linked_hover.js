/*
 * PreFIQs: hovering a face in one embedding map rings the same face in the other map.
 *
 * FiftyOne's plot widget reports clicks and selections to a Python panel but no hover, so this small
 * component (plain JavaScript, no build step: the App loads it with a <script> tag and provides React
 * and its plugin registry as globals) does it in the page. The Face Quality panel's layout places it
 * next to its maps; it finds the two maps by their layout's `meta` ("prefiqs:dense", "prefiqs:pruned"),
 * listens to Plotly's own hover events and draws a ring over the other map's point with the same id.
 * Nothing goes to the server.
 */
(function () {
  "use strict";
  var React = window.React;
  var registry = window.__fop__;
  if (!React || !registry || typeof registry.registerComponent !== "function") {
    console.warn("PreFIQs linked hover: FiftyOne's plugin globals are missing; hover stays per map");
    return;
  }
  var OTHER = { "prefiqs:dense": "prefiqs:pruned", "prefiqs:pruned": "prefiqs:dense" };
  var RING_CLASS = "prefiqs-linked-ring";

  function mapsIn(root) {
    var found = {};
    root.querySelectorAll(".js-plotly-plot").forEach(function (gd) {
      var meta = gd.layout && gd.layout.meta;
      if (OTHER[meta]) found[meta] = gd;
    });
    return found;
  }

  function markers(gd) {
    return (gd.data || []).find(function (t) {
      return t.mode === "markers" && t.name !== "pinned" && Array.isArray(t.ids);
    });
  }

  function ring(gd) {
    var el = gd.querySelector("." + RING_CLASS);
    if (!el) {
      el = document.createElement("div");
      el.className = RING_CLASS;
      el.style.cssText = "position:absolute;width:22px;height:22px;margin:-11px 0 0 -11px;border:3px solid #00b4ff;" +
        "border-radius:50%;pointer-events:none;z-index:10;display:none;box-shadow:0 0 0 2px #fff";
      if (getComputedStyle(gd).position === "static") gd.style.position = "relative";
      gd.appendChild(el);
    }
    return el;
  }

  function show(gd, id) {
    var t = markers(gd);
    var k = t ? t.ids.indexOf(id) : -1;
    var L = gd._fullLayout;
    var el = ring(gd);
    if (k < 0 || !L || !L.xaxis || !L.yaxis) {
      el.style.display = "none";
      return;
    }
    el.style.left = L.xaxis._offset + L.xaxis.l2p(t.x[k]) + "px";
    el.style.top = L.yaxis._offset + L.yaxis.l2p(t.y[k]) + "px";
    el.style.display = "block";
    el.dataset.faceId = id;
  }

  function hide(gd) {
    var el = gd && gd.querySelector("." + RING_CLASS);
    if (el) el.style.display = "none";
  }

  // Plotly keeps a chart's element across re-plots, so each element is hooked once; a re-mounted
  // chart is a new element and is hooked by the next scan.
  function hook(root) {
    var maps = mapsIn(root);
    Object.keys(maps).forEach(function (meta) {
      var gd = maps[meta];
      if (gd.__prefiqsLinked || typeof gd.on !== "function") return;
      gd.__prefiqsLinked = true;
      gd.on("plotly_hover", function (ev) {
        var other = mapsIn(root)[OTHER[meta]];
        var p = ev && ev.points && ev.points[0];
        var id = p && p.data && Array.isArray(p.data.ids) ? p.data.ids[p.pointNumber] : null;
        if (!other) return;
        if (id) show(other, id);
        else hide(other);
      });
      gd.on("plotly_unhover", function () {
        hide(mapsIn(root)[OTHER[meta]]);
      });
    });
  }

  function LinkedHover() {
    var ref = React.useRef(null);
    React.useEffect(function () {
      var root = function () {
        // the panel holding this component (its maps are its siblings), else the page
        var el = ref.current;
        while (el && el.parentElement && !el.parentElement.querySelector(".js-plotly-plot")) el = el.parentElement;
        return (el && el.parentElement) || document;
      };
      var timer = setInterval(function () { hook(root()); }, 500);
      return function () { clearInterval(timer); };
    }, []);
    return React.createElement("span", { ref: ref, "data-prefiqs-linked-hover": "on", style: { display: "none" } });
  }

  registry.registerComponent({
    name: "PrefiqsLinkedHover",
    label: "PreFIQs linked hover",
    component: LinkedHover,
    type: registry.PluginComponentType.Component,
    activator: function () { return true; },
  });
})();
