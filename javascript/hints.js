// Hints: a tooltip (title) on the controls whose purpose is not obvious, looked up by the control's visible
// text, as A1111's hints.js does. The texts are Easel's own. Extensions may add entries to easelTitles.

/* global onAfterUiUpdate, gradioApp */

var easelTitles = {
    "Generate": "Start a job with these settings (Ctrl+Enter). Right-click for Generate forever.",
    "Interrupt": "Stop this page's job; images finished so far are kept (Escape).",
    "Skip": "Stop the current image and go on with the next one of the batch (Alt+Enter).",
    "↙": "Read generation parameters from the prompt box into the controls; with an empty box, the last job's.",
    "🗑️": "Clear the prompt and the negative prompt.",
    "🎴": "Show or hide the extra networks (LoRA, embeddings...): a click on a card adds it to this prompt.",
    "Apply styles": "Write the selected styles into the prompt boxes and clear the selection.",
    "Sampling method": "The algorithm that removes noise step by step.",
    "Schedule type": "How the noise level falls from one step to the next.",
    "Sampling steps": "How many times the image is refined; more is slower and not always better.",
    "CFG Scale": "How strongly the image follows the prompt; higher values follow it more literally.",
    "Seed": "The starting noise: the same seed and settings give the same image. -1 picks a random seed.",
    "Random": "Set the seed to -1: a new random seed each time.",
    "Reuse": "Take the seed of the selected image.",
    "Batch count": "How many batches to make one after another.",
    "Batch size": "How many images to make at once (needs more memory).",
    "Clip skip": "Stop the text encoder this many layers before its end (2 suits many anime models).",
    "Denoising strength": "How much of the image is changed: 0 keeps it, 1 replaces it entirely.",
    "Restore faces": "Run a face restoration model over the faces of the result.",
    "Refresh": "Scan the model folders again.",
    "Send to img2img": "Send the selected image and its parameters to the img2img tab.",
    "Send to inpaint": "Send the selected image and its parameters to the inpaint tab.",
    "Apply settings": "Save the changed settings to config.json; they apply at once.",
    "Show all pages": "Show the settings of every page at once.",
};

function easelHintText(element) {
    const text = (element.textContent || "").trim();
    return easelTitles[text] || null;
}

function easelAddHints() {
    const candidates = gradioApp().querySelectorAll("button, label span, [data-testid=block-info], .label-wrap span");
    for (const element of candidates) {
        if (element.title) continue;
        const hint = easelHintText(element);
        if (hint) element.title = hint;
    }
}

onAfterUiUpdate(easelAddHints);
