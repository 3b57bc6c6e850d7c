// The demo bank's page. Every action is a call to /api/…; the app's
// backend holds the tokens. When the API asks for a step-up, the page says
// why, keeps the action, and after the step-up repeats it once.
"use strict";
(function () {
  const ACCOUNT = "42";
  const PENDING = "stepup-demo-pending-action";
  const $ = (id) => document.getElementById(id);

  function log(line, cls) {
    const entry = document.createElement("div");
    entry.textContent = new Date().toLocaleTimeString() + "  " + line;
    if (cls) entry.className = cls;
    $("log").prepend(entry);
  }

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  function result(text, ok) {
    $("result").textContent = text;
    $("result").className = ok ? "ok" : "bad";
  }

  async function call(action, isRetry) {
    const response = await fetch("/api" + action.path, {
      method: action.method,
      headers: { "content-type": "application/json", "x-stepup-demo": "1" },
      body: action.body ? JSON.stringify(action.body) : undefined,
    });
    const data = await response.json().catch(() => ({}));
    log(action.method + " " + action.path + " → " + response.status + (isRetry ? " (retry after step-up)" : ""),
        response.ok ? "ok" : "bad");
    if (response.status === 401 && data.step_up) {
      if (isRetry) {
        result("Still refused after the step-up: " + (data.step_up.reason || data.step_up.error), false);
        return null;
      }
      askStepUp(action, data);
      return null;
    }
    if (response.status === 401 && data.sign_in) {
      show("signed-in", false);
      show("signed-out", true);
      return null;
    }
    if (!response.ok) {
      result("Refused: " + (data.error_description || data.error || response.status), false);
      return null;
    }
    return data;
  }

  function askStepUp(action, data) {
    const s = data.step_up;
    $("step-up-reason").textContent = s.reason || "The API asks for more assurance.";
    const parts = [];
    if (s.acr_values && s.acr_values.length) parts.push("level " + s.acr_values.join(" or "));
    if (s.max_age !== null && s.max_age !== undefined) parts.push("signed in within " + s.max_age + " s");
    if (s.scope) parts.push("scope " + s.scope);
    if (s.transaction) parts.push("approving this transaction only");
    $("step-up-detail").textContent = (s.error || "") + (parts.length ? ": " + parts.join(", ") : "");
    log("step-up asked: " + $("step-up-detail").textContent);
    sessionStorage.setItem(PENDING, JSON.stringify(action));
    $("step-up-continue").onclick = () => { window.location.href = data.login; };
    show("step-up", true);
  }

  const actions = {
    balance: () => ({ method: "GET", path: "/accounts/" + ACCOUNT + "/balance", label: "balance" }),
    transactions: () => ({ method: "GET", path: "/accounts/" + ACCOUNT + "/transactions", label: "transactions" }),
    paymentDetails: () => ({ method: "PUT", path: "/accounts/" + ACCOUNT + "/payment-details",
                             body: { iban: $("iban").value }, label: "payment details" }),
    payee: () => ({ method: "POST", path: "/accounts/" + ACCOUNT + "/payees",
                    body: { name: $("payee-name").value, iban: $("payee-iban").value }, label: "payee" }),
    // Above 1000 EUR a transfer is approved for itself (amount, creditor).
    transfer: () => ({ method: "POST", path: "/accounts/" + ACCOUNT + (Number($("amount").value) > 1000 ? "/transfers/large" : "/transfers"),
                       body: { amount: Number($("amount").value), currency: "EUR", to: $("to").value }, label: "transfer" }),
  };

  function render(action, data) {
    if (!data) return;
    if (action.label === "balance") {
      $("balance").textContent = data.balance + " " + data.currency + " (token acr " + data.acr +
        (data.dpop_bound ? ", bound to the app's key by DPoP" : ", bearer") + ")";
    } else if (action.label === "transactions") {
      const list = $("transactions");
      list.textContent = "";
      for (const t of data.transactions) {
        const li = document.createElement("li");
        li.textContent = t.date + "  " + t.description + "  " + t.amount;
        list.append(li);
      }
    } else if (action.label === "payment details") {
      result("Payment details changed to " + data.iban + " (token acr " + data.acr + ").", true);
    } else if (action.label === "payee") {
      result("Payee " + data.added.name + " added (token acr " + data.acr + ").", true);
    } else if (action.label === "transfer") {
      result("Sent " + data.sent + " EUR to " + data.to + "; balance " + data.balance + " (token acr " + data.acr + ").", true);
    }
  }

  async function run(action, isRetry) {
    render(action, await call(action, isRetry));
  }

  $("sign-in").onclick = () => { window.location.href = "/login"; };
  $("sign-out").onclick = async () => {
    await fetch("/logout", { method: "POST", headers: { "x-stepup-demo": "1" } });
    window.location.href = "/";
  };
  $("step-up-cancel").onclick = () => {
    sessionStorage.removeItem(PENDING);
    show("step-up", false);
    log("step-up cancelled");
  };
  $("read-balance").onclick = () => run(actions.balance(), false);
  $("read-transactions").onclick = () => run(actions.transactions(), false);
  for (const [form, make] of [["payment-details", actions.paymentDetails], ["payee", actions.payee], ["transfer", actions.transfer]]) {
    $(form).addEventListener("submit", (event) => {
      event.preventDefault();
      run(make(), false);
    });
  }

  async function start() {
    const params = new URLSearchParams(window.location.search);
    if (params.get("error")) {
      result("Sign-in ended: " + params.get("error"), false);
    }
    const session = await fetch("/session").then((r) => r.json());
    show("signed-in", session.signed_in);
    show("signed-out", !session.signed_in);
    if (!session.signed_in) return;
    const pending = sessionStorage.getItem(PENDING);
    sessionStorage.removeItem(PENDING);
    if (pending && params.get("stepped_up")) {
      history.replaceState(null, "", "/");
      log("signed in at the asked level; repeating the action once");
      await run(JSON.parse(pending), true);
    } else {
      await run(actions.balance(), false);
    }
  }
  start();
})();
