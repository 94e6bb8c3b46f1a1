// Typeset the page's formulas ($...$, $$...$$, \(...\), \[...\]) with KaTeX, which ships with the site.
// Code, outputs in <pre> and the hidden copy-to-clipboard text are left alone.
// When done: <html data-math="done">.
(function () {
  function typeset() {
    renderMathInElement(document.body, {
      delimiters: [
        {left: '$$', right: '$$', display: true}, {left: '\\[', right: '\\]', display: true},
        {left: '$', right: '$', display: false}, {left: '\\(', right: '\\)', display: false}],
      ignoredTags: ['script', 'noscript', 'style', 'textarea', 'pre', 'code', 'option'],
      ignoredClasses: ['clipboard-copy-txt', 'md-search'],
      throwOnError: false,    // a formula KaTeX cannot read: its source in red, the error as its title
      errorColor: '#cc0033',  // also the colour of an unknown command; tools/check_site.py looks for it
    });
    document.documentElement.dataset.math = 'done';
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', typeset);
  else typeset();
})();
