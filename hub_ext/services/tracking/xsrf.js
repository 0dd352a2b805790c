/*
 * Shipyard: MLflow's UI sends JupyterHub's XSRF token with its own requests.
 *
 * The tracking gateway accepts the hub's login cookie on a fetch or XMLHttpRequest
 * only with an X-XSRFToken header that holds the _xsrf cookie's value (JupyterHub's
 * rule for cookie-authenticated requests, which JupyterLab follows the same way).
 * MLflow's frontend does not send it, so the gateway puts this script into MLflow's
 * page ahead of MLflow's own code (hub_ext/services/tracking/ui.py).
 *
 * The header goes only to this origin, under the service's prefix (the folder above
 * this script): the token never leaves for another site or another service, and a page
 * of another origin, which cannot read the cookie, still cannot use the login.
 */
(function () {
  'use strict';
  var script = document.currentScript;
  if (!script || !script.src) {
    return;
  }
  // .../services/tracking/shipyard/xsrf.js -> /services/tracking/
  var prefix = new URL('..', script.src).pathname;

  function token() {
    var match = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
    return match ? decodeURIComponent(match[1].replace(/^"|"$/g, '')) : null;
  }

  function ours(url) {
    try {
      var target = new URL(String(url), document.baseURI);
      return target.origin === window.location.origin && target.pathname.indexOf(prefix) === 0;
    } catch (e) {
      return false;
    }
  }

  var originalFetch = window.fetch;
  if (originalFetch) {
    window.fetch = function (input, init) {
      var isRequest = typeof Request !== 'undefined' && input instanceof Request;
      var value = ours(isRequest ? input.url : input) ? token() : null;
      if (value) {
        // init's headers, when given, replace the Request's: start from whichever applies
        var headers = new Headers(
          init && init.headers ? init.headers : isRequest ? input.headers : undefined
        );
        if (!headers.has('X-XSRFToken')) {
          headers.set('X-XSRFToken', value);
        }
        init = Object.assign({}, init, { headers: headers });
      }
      return originalFetch.call(window, input, init);
    };
  }

  var open = XMLHttpRequest.prototype.open;
  var send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url) {
    this._shipyardXsrf = ours(url);
    return open.apply(this, arguments);
  };
  XMLHttpRequest.prototype.send = function () {
    var value = this._shipyardXsrf ? token() : null;
    if (value) {
      this.setRequestHeader('X-XSRFToken', value);
    }
    return send.apply(this, arguments);
  };
})();
