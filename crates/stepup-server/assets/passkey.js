// Runs the WebAuthn ceremony of a passkey page. The server puts the
// options (JSON, binary members in base64url) in the form's data-options;
// the browser's answer goes back, as JSON with base64url members, in the
// form's "credential" field, and the form is submitted.
"use strict";
(function () {
  const form = document.getElementById("passkey-form");
  const button = document.getElementById("passkey-button");
  const status = document.getElementById("passkey-status");
  if (!form || !button) {
    return;
  }

  function fromBase64url(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const binary = atob(padded);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function credentialList(list) {
    return (list || []).map(function (c) {
      return Object.assign({}, c, { id: fromBase64url(c.id) });
    });
  }

  async function create(options) {
    const publicKey = Object.assign({}, options.publicKey, {
      challenge: fromBase64url(options.publicKey.challenge),
      user: Object.assign({}, options.publicKey.user, {
        id: fromBase64url(options.publicKey.user.id),
      }),
      excludeCredentials: credentialList(options.publicKey.excludeCredentials),
    });
    const credential = await navigator.credentials.create({ publicKey: publicKey });
    const response = credential.response;
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: toBase64url(response.attestationObject),
        clientDataJSON: toBase64url(response.clientDataJSON),
        transports: response.getTransports ? response.getTransports() : undefined,
      },
      extensions: credential.getClientExtensionResults(),
    };
  }

  async function get(options) {
    const publicKey = Object.assign({}, options.publicKey, {
      challenge: fromBase64url(options.publicKey.challenge),
      allowCredentials: credentialList(options.publicKey.allowCredentials),
    });
    const credential = await navigator.credentials.get({ publicKey: publicKey });
    const response = credential.response;
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: toBase64url(response.authenticatorData),
        clientDataJSON: toBase64url(response.clientDataJSON),
        signature: toBase64url(response.signature),
        userHandle: response.userHandle ? toBase64url(response.userHandle) : null,
      },
      extensions: credential.getClientExtensionResults(),
    };
  }

  async function run() {
    if (!window.PublicKeyCredential || !navigator.credentials) {
      status.textContent = "This browser does not support passkeys.";
      return;
    }
    button.disabled = true;
    status.textContent = "Waiting for your passkey…";
    try {
      const options = JSON.parse(form.dataset.options);
      const answer = form.dataset.ceremony === "create" ? await create(options) : await get(options);
      form.elements.credential.value = JSON.stringify(answer);
      form.submit();
    } catch (error) {
      // Cancelled, timed out, or no matching passkey: the user may retry.
      status.textContent = "The passkey was not used (" + (error && error.name ? error.name : "error") + "). Try again.";
      button.disabled = false;
    }
  }

  button.addEventListener("click", run);
  // Enter in a text field submits the form: run the ceremony instead of
  // sending an empty answer.
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!button.disabled) {
      run();
    }
  });
})();
