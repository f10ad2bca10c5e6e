/* ipywidgets 8 typesets widget labels with the MathJax 2 API
 * (`MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])`) whenever a global
 * MathJax exists; this site serves MathJax 3, which has no `Hub`. Before the
 * widgets are drawn (they wait for the window's load event), give MathJax 3 a
 * minimal Hub whose Queue typesets the element with the MathJax 3 API. */
document.addEventListener("DOMContentLoaded", function () {
  var mj = window.MathJax;
  if (!mj || mj.Hub) { return; }
  mj.Hub = {
    Queue: function (job) {
      var element = Array.isArray(job) ? job[2] : null;
      var ready = (mj.startup && mj.startup.promise) || Promise.resolve();
      ready.then(function () {
        if (element && typeof mj.typesetPromise === "function") { return mj.typesetPromise([element]); }
      }).catch(function (err) { console.warn("MathJax could not typeset a widget label:", err); });
    }
  };
});
