/* The playground: live token count, submission, the streamed outputs, Stop; and, on the page of a
   job still queued or running, a reload once it ends. Text from the model or the user is only ever
   set with textContent or text nodes, never parsed as HTML. */
(function () {
  "use strict";

  const PARAMS = ["model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "n"];
  const COUNT_DELAY_MS = 300;

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function postJSON(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrfToken()},
      body: body === undefined ? "" : JSON.stringify(body),
    });
  }

  async function readJSON(response) {
    try { return await response.json(); } catch (error) { return null; }
  }

  /** {message, param} of an answer in OpenAI's error shape (or of one that is not JSON at all). */
  function errorOf(response, data) {
    const error = data && data.error ? data.error : {};
    let message = error.message || `The server answered ${[response.status, response.statusText].join(" ").trim()}.`;
    const retry = response.headers.get("Retry-After");
    if (response.status === 429 && retry) message += ` Try again in ${retry} s.`;
    return {message, param: error.param || null};
  }

  function eventData(event) {
    try { return JSON.parse(event.data); } catch (error) { return {}; }
  }

  function seconds(ms) { return `${(ms / 1000).toFixed(2)} s`; }

  // -- the page of a job that has not ended: follow its events, reload when it ends ------------------
  const follow = document.querySelector("[data-follow-events]");
  if (follow) {
    const source = new EventSource(follow.dataset.followEvents);
    source.addEventListener("queue", (event) => {
      follow.textContent = `Position ${eventData(event).position} in the queue. This page reloads when the job ends.`;
    });
    source.addEventListener("started", () => { follow.textContent = "Running. This page reloads when the job ends."; });
    source.addEventListener("done", () => { source.close(); window.location.reload(); });
  }

  // -- the playground form ----------------------------------------------------------------------------
  const form = document.getElementById("playground-form");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const field = (name) => form.elements.namedItem(name);
  const model = field("model"), prompt = field("prompt"), maxTokens = field("max_tokens");
  const inputs = $("pg-inputs"), submit = $("pg-submit"), stop = $("pg-stop");
  const modelState = $("pg-model-state"), tokenCount = $("pg-token-count"), formError = $("pg-error");
  const status = $("pg-status"), stats = $("pg-stats"), outputs = $("pg-outputs");
  const maxPromptTokens = Number(form.dataset.maxPromptTokens);

  let job = null;        // the job this page follows: {id, cancelUrl, ended, boxes, seen, ...}
  let lastCount = null;  // the last token count answered for the current prompt and model
  let countTimer = null, countSequence = 0;

  function selectedRelease() {
    const option = model.selectedOptions[0];
    if (!option) return {licence: false, workers: 0, contextLength: null};
    return {licence: option.dataset.licenceRequired === "1", workers: Number(option.dataset.workers),
            contextLength: option.dataset.contextLength ? Number(option.dataset.contextLength) : null};
  }

  /** Disable the form for a release whose licence must be accepted, and Generate where no worker serves it. */
  function applyReleaseState() {
    const release = selectedRelease();
    inputs.disabled = release.licence;
    submit.disabled = release.licence || release.workers === 0 || Boolean(job && !job.ended);
    modelState.textContent = release.licence ? "Accept the new version of its licence first (see the notice above)."
      : release.workers === 0 ? "No worker is serving this model right now." : "";
  }

  // -- token count --------------------------------------------------------------------------------

  function promptLimit(contextLength) {
    return contextLength ? Math.min(contextLength, maxPromptTokens) : maxPromptTokens;
  }

  function renderCount() {
    tokenCount.classList.remove("notice-bad");
    if (!lastCount) return;
    const {tokens, context_length: context, max_prompt_tokens: limit} = lastCount;
    const wanted = parseInt(maxTokens.value, 10) || 0;
    let text = `${tokens} / ${Math.min(context, limit)} tokens`;
    if (tokens > limit) text += `: over your prompt limit of ${limit}`;
    else if (tokens + wanted > context) {
      text += `: with ${wanted} new tokens it needs ${tokens + wanted} of the model's ${context}-token context`;
    }
    else text += ` (the prompt and max tokens must fit the model's ${context}-token context)`;
    tokenCount.textContent = text;
    tokenCount.classList.toggle("notice-bad", tokens > limit || tokens + wanted > context);
  }

  async function countTokens() {
    const sequence = ++countSequence;
    lastCount = null;
    if (!prompt.value) {
      tokenCount.classList.remove("notice-bad");
      tokenCount.textContent = `0 / ${promptLimit(selectedRelease().contextLength)} tokens`;
      return;
    }
    let response, data;
    try {
      response = await postJSON(form.dataset.tokenCountUrl, {model: model.value, prompt: prompt.value});
      data = await readJSON(response);
    } catch (error) {
      if (sequence === countSequence) tokenCount.textContent = "The tokens could not be counted: no answer.";
      return;
    }
    if (sequence !== countSequence) return;  // a newer prompt is being counted
    if (!response.ok) {
      tokenCount.textContent = errorOf(response, data).message;
      tokenCount.classList.add("notice-bad");
      return;
    }
    lastCount = data;
    renderCount();
  }

  function scheduleCount() {
    clearTimeout(countTimer);
    countTimer = setTimeout(countTokens, COUNT_DELAY_MS);
  }

  // -- errors -------------------------------------------------------------------------------------

  function clearErrors() {
    formError.hidden = true;
    formError.textContent = "";
    form.querySelectorAll("[data-error-for]").forEach((span) => { span.hidden = true; span.textContent = ""; });
    PARAMS.forEach((name) => { const input = field(name); if (input) input.removeAttribute("aria-invalid"); });
  }

  /** The message above the buttons and, when it names a field, beside that field too. */
  function showError({message, param}) {
    formError.textContent = message;
    formError.hidden = false;
    const span = param && form.querySelector(`[data-error-for="${CSS.escape(param)}"]`);
    if (span) {
      span.textContent = message;
      span.hidden = false;
      const input = field(param);
      if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
    }
  }

  // -- the request --------------------------------------------------------------------------------

  function numberOrNull(name) {
    const raw = field(name).value.trim();
    return raw === "" ? null : Number(raw);
  }

  /** The completions API's body; null (with the error shown) when the page cannot send it as typed. */
  function requestBody() {
    const seedText = field("seed").value.trim();
    if (seedText !== "" && /^-?\d+$/.test(seedText) && !Number.isSafeInteger(Number(seedText))) {
      const message = `The page sends seeds up to ${Number.MAX_SAFE_INTEGER} (use the API for larger ones).`;
      showError({message, param: "seed"});
      return null;
    }
    return {
      model: model.value, prompt: prompt.value, max_tokens: numberOrNull("max_tokens"),
      temperature: numberOrNull("temperature"), top_p: numberOrNull("top_p"), top_k: numberOrNull("top_k"),
      stop: field("stop").value.split(/\r?\n/).filter((line) => line !== ""),
      seed: numberOrNull("seed"), n: numberOrNull("n"),
    };
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (job && !job.ended) return;
    clearErrors();
    const body = requestBody();
    if (body === null) return;
    submit.disabled = true;
    status.textContent = "Submitting…";
    const submittedAt = performance.now();
    let response, data;
    try {
      response = await postJSON(form.action, body);
      data = await readJSON(response);
    } catch (error) {
      data = null;
    }
    if (!response || response.status !== 201 || !data) {
      status.textContent = "Not submitted.";
      const unsent = {message: "The request did not reach the server; try again.", param: null};
      showError(response ? errorOf(response, data) : unsent);
      applyReleaseState();
      return;
    }
    followJob(data, body.n || 1, submittedAt);
  });

  // -- the stream ---------------------------------------------------------------------------------

  function outputBox(index) {
    while (job.boxes.length <= index) {
      const number = job.boxes.length + 1;
      const figure = document.createElement("figure");
      figure.className = "output-box";
      const caption = document.createElement("figcaption");
      caption.textContent = `Output ${number}`;
      const reason = document.createElement("span");
      reason.className = "finish-reason";
      caption.append(" ", reason);
      const pre = document.createElement("pre");
      pre.className = "output";
      pre.id = `pg-output-${number - 1}`;
      const text = document.createTextNode("");
      pre.append(text);
      figure.append(caption, pre);
      outputs.append(figure);
      job.boxes.push({text, reason});
    }
    return job.boxes[index];
  }

  /** A stream event already handled (defensive: the server resumes after Last-Event-ID itself). */
  function seenBefore(event) {
    if (!event.lastEventId) return false;
    if (job.seen.has(event.lastEventId)) return true;
    job.seen.add(event.lastEventId);
    return false;
  }

  function followJob(info, n, submittedAt) {
    job = {id: info.id, cancelUrl: info.cancel, ended: false, boxes: [], seen: new Set(), tokens: 0,
           firstTokenAt: null, finish: {}};
    outputs.replaceChildren();
    for (let i = 0; i < n; i++) outputBox(i);
    $("pg-seed-used").textContent = String(info.seed);
    $("pg-prompt-tokens").textContent = String(info.prompt_tokens);
    $("pg-ttft").textContent = "—";
    $("pg-rate").textContent = "—";
    $("pg-job-link").href = info.url;
    $("pg-rerun-link").href = `${form.dataset.playgroundUrl}?rerun=${encodeURIComponent(info.id)}`;
    stats.hidden = false;
    $("pg-job-links").hidden = false;
    stop.hidden = false;
    stop.disabled = false;
    status.textContent = "Queued.";
    const result = $("pg-result");
    if (result.getBoundingClientRect().top > window.innerHeight) result.scrollIntoView({block: "start"});

    const current = job;
    const source = new EventSource(info.events);
    job.source = source;
    const setStatus = (text) => { current.statusText = text; if (!current.reconnecting) status.textContent = text; };
    source.addEventListener("open", () => {  // (re)connected: the server resumes after the last event seen
      if (current.reconnecting) { current.reconnecting = false; status.textContent = current.statusText; }
    });
    source.addEventListener("queue", (event) => setStatus(`Position ${eventData(event).position} in the queue.`));
    source.addEventListener("queued", (event) => {
      const attempt = eventData(event).attempt;
      setStatus(attempt > 1 ? `Queued again (attempt ${attempt}): its worker was lost before it produced any text.`
        : "Queued.");
    });
    source.addEventListener("started", () => setStatus("Running."));
    source.addEventListener("token", (event) => {
      if (seenBefore(event)) return;
      const data = eventData(event), now = performance.now();
      if (current.firstTokenAt === null) {
        current.firstTokenAt = now;
        $("pg-ttft").textContent = seconds(now - submittedAt);
        setStatus("Generating…");
      }
      current.tokens += 1;
      outputBox(data.index || 0).text.appendData(data.text || "");
      if (current.tokens > 1) {
        $("pg-rate").textContent = ((current.tokens - 1) / ((now - current.firstTokenAt) / 1000)).toFixed(1);
      }
    });
    source.addEventListener("finish", (event) => {
      if (seenBefore(event)) return;
      const data = eventData(event);
      current.finish[data.index || 0] = data.finish_reason;
      outputBox(data.index || 0).reason.textContent = `finish reason: ${data.finish_reason}`;
    });
    source.addEventListener("error", (event) => {
      if (event.data !== undefined) {  // the job's own "error" event, not the connection's
        const data = eventData(event);
        showError({message: data.message || `The job failed (${data.code}).`, param: null});
        return;
      }
      if (current.ended) return;
      if (source.readyState === EventSource.CLOSED) {
        current.ended = true;
        stop.hidden = true;
        status.textContent = "The connection to the job was lost; its page shows the result.";
        applyReleaseState();
      } else {
        current.reconnecting = true;
        status.textContent = "Connection lost; reconnecting…";
      }
    });
    source.addEventListener("done", (event) => {
      source.close();
      current.ended = true;
      const data = eventData(event), usage = data.usage || {};
      const reasons = Object.keys(current.finish).sort((a, b) => a - b).map((i) => current.finish[i]);
      let text = `Status: ${data.status}.`;
      if (reasons.length) text += ` Finish reason${reasons.length > 1 ? "s" : ""}: ${reasons.join(", ")}.`;
      if (usage.total_tokens !== undefined) {
        text += ` ${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`
          + ` (${usage.total_tokens} in all).`;
      }
      current.reconnecting = false;
      setStatus(text);
      stop.hidden = true;
      applyReleaseState();
    });
  }

  stop.addEventListener("click", async () => {
    if (!job || job.ended) return;
    stop.disabled = true;
    status.textContent = "Stopping…";
    try {
      const response = await postJSON(job.cancelUrl);
      if (!response.ok) { showError(errorOf(response, await readJSON(response))); stop.disabled = false; }
    } catch (error) {
      showError({message: "The stop request did not reach the server; try again.", param: null});
      stop.disabled = false;
    }
  });

  model.addEventListener("change", () => { applyReleaseState(); scheduleCount(); });
  prompt.addEventListener("input", scheduleCount);
  maxTokens.addEventListener("input", renderCount);
  applyReleaseState();
  if (prompt.value) countTokens();
})();
