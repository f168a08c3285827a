// Ctrl+Up / Ctrl+Down in a prompt box: change the weight of the selection, or of the word / (block) / <network>
// under the cursor, as A1111 v1.10.1 does: "word" -> "(word:1.1)", steps of keyedit_precision_attention,
// "(word:1.0)" unwraps to "word", "<lora:name:0.8>" steps by keyedit_precision_extra, "(word)" and "[word]"
// (old emphasis) become "(word:1.1)" / "(word:0.9)" before the step. Written for Easel (no library does this).

/* global opts, updateInput */
/* exported easelEditAttention */

var EASEL_WHITESPACE_DELIMITERS = {"Tab": "\t", "Carriage Return": "\r", "Line Feed": "\n"};

function easelKeyeditSettings(values) {
    const source = values || {};
    const whitespace = source.keyedit_delimiters_whitespace || ["Tab", "Carriage Return", "Line Feed"];
    let delimiters = source.keyedit_delimiters !== undefined ? source.keyedit_delimiters : ".,\\/!?%^*;:{}=`~() ";
    for (const name of whitespace) delimiters += EASEL_WHITESPACE_DELIMITERS[name] || "";
    return {
        attention: Number(source.keyedit_precision_attention || 0.1),
        extra: Number(source.keyedit_precision_extra || 0.05),
        delimiters: delimiters,
    };
}

// The text between the nearest `open` before the cursor and the nearest `close` after it (the weight left out),
// or null when the cursor is not inside such a block.
function easelBlockAround(text, cursor, open, close) {
    const before = text.substring(0, cursor);
    const openAt = before.lastIndexOf(open);
    if (openAt === -1 || before.lastIndexOf(close) > openAt) return null;
    const after = text.substring(cursor);
    const closeOffset = after.indexOf(close);
    if (closeOffset === -1) return null;
    const nextOpen = after.indexOf(open);
    if (nextOpen !== -1 && nextOpen < closeOffset) return null;
    const inside = text.substring(openAt + 1, cursor + closeOffset);
    const start = openAt + 1;
    if (/:-?[\d.]+/s.test(inside)) return {start: start, end: start + inside.lastIndexOf(":")};
    return {start: start, end: start + inside.length};
}

function easelWordAround(text, cursor, delimiters) {
    let start = cursor;
    let end = cursor;
    while (start > 0 && !delimiters.includes(text[start - 1])) start--;
    while (end < text.length && !delimiters.includes(text[end])) end++;
    while (start < end && text[start] === " ") start++;
    while (end > start && text[end - 1] === " ") end--;
    return {start: start, end: end};
}

function easelSelectionToEdit(text, start, end, settings) {
    if (start !== end) return {start: start, end: end};
    return easelBlockAround(text, start, "<", ">") ||
        easelBlockAround(text, start, "(", ")") ||
        easelBlockAround(text, start, "[", "]") ||
        easelWordAround(text, start, settings.delimiters);
}

function easelFormatWeight(weight) {
    const rounded = parseFloat(weight.toPrecision(12));
    return Number.isInteger(rounded) ? rounded + ".0" : String(rounded);
}

// Turns the selection into "(selection:weight)" when it has no weight yet; returns the new state, or null when
// there is nothing to weight.
function easelWrapSelection(state, settings) {
    let {text, start, end} = state;
    const before = start > 0 ? text[start - 1] : "";
    const after = text[end];
    if (before === "<") return {text, start, end, close: ">", delta: settings.extra};
    if ((before === "(" && after === ")") || (before === "[" && after === "]")) {
        let depth = 0;
        while (text[start - depth - 1] === before && text[end + depth] === after) depth++;
        let weight = before === "[" ? (1 / 1.1) ** depth : 1.1 ** depth;
        weight = Math.round(weight / settings.attention) * settings.attention;
        text = text.slice(0, start - depth) + "(" + text.slice(start, end) + ":" + weight + ")" +
            text.slice(end + depth);
        return {text, start: start - depth + 1, end: end - depth + 1, close: ")", delta: settings.attention};
    }
    if (before === "(") return {text, start, end, close: ")", delta: settings.attention};
    while (end > start && text[end - 1] === " ") end--;
    if (start === end) return null;
    text = text.slice(0, start) + "(" + text.slice(start, end) + ":1.0)" + text.slice(end);
    return {text, start: start + 1, end: end + 1, close: ")", delta: settings.attention};
}

// The edit for one key press: {text, start, end} (the selection to show), or null when nothing changes.
function easelEditAttention(text, selectionStart, selectionEnd, up, values) {
    const settings = easelKeyeditSettings(values);
    const selection = easelSelectionToEdit(text, selectionStart, selectionEnd, settings);
    const state = easelWrapSelection({text, start: selection.start, end: selection.end}, settings);
    if (state === null || state.text[state.end] !== ":") return null;
    const weightEnd = state.text.indexOf(state.close, state.end + 1);
    if (weightEnd === -1) return null;
    let weight = parseFloat(state.text.slice(state.end + 1, weightEnd));
    if (isNaN(weight)) return null;
    weight += up ? state.delta : -state.delta;
    const shown = easelFormatWeight(weight);
    if (state.close === ")" && parseFloat(shown) === 1) {
        const unwrapped = state.text.slice(0, state.start - 1) + state.text.slice(state.start, state.end) +
            state.text.slice(weightEnd + 1);
        return {text: unwrapped, start: state.start - 1, end: state.end - 1};
    }
    return {
        text: state.text.slice(0, state.end + 1) + shown + state.text.slice(weightEnd),
        start: state.start,
        end: state.end,
    };
}

function easelIsPromptBox(target) {
    return target instanceof HTMLTextAreaElement && target.matches(":is([id$='_prompt'], .prompt) textarea");
}

function easelOnEditAttentionKey(event) {
    if (!(event.metaKey || event.ctrlKey) || (event.key !== "ArrowUp" && event.key !== "ArrowDown")) return;
    const target = event.composedPath()[0];
    if (!easelIsPromptBox(target)) return;
    event.preventDefault();
    const edit = easelEditAttention(
        target.value, target.selectionStart, target.selectionEnd, event.key === "ArrowUp", opts
    );
    if (edit === null) return;
    target.focus();
    target.value = edit.text;
    target.setSelectionRange(edit.start, edit.end);
    updateInput(target);
}

addEventListener("keydown", easelOnEditAttentionKey);
