// `{name}` placeholders in prompt templates, parsed the way the server does
// (Python's str.format grammar: `{{` and `}}` are literal braces; only bare names).

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/** {names: Set<string>, problems: string[]} for a template string. */
export function placeholders(text) {
  const names = new Set();
  const problems = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '{') {
      if (text[i + 1] === '{') { i += 2; continue; }
      const end = text.indexOf('}', i + 1);
      if (end < 0) { problems.push("a '{' is never closed (write a literal brace as {{)"); break; }
      const field = text.slice(i + 1, end);
      if (NAME.test(field)) names.add(field);
      else problems.push(`{${field}} is not a plain {name}`);
      i = end + 1;
    } else if (c === '}') {
      if (text[i + 1] === '}') { i += 2; continue; }
      problems.push("a single '}' (write a literal brace as }})");
      i += 1;
    } else {
      i += 1;
    }
  }
  return { names, problems };
}

/** Insert `snippet` at the caret of a textarea and fire an input event. */
export function insertAtCaret(textarea, snippet) {
  const { selectionStart: s, selectionEnd: e, value } = textarea;
  textarea.value = value.slice(0, s) + snippet + value.slice(e);
  textarea.selectionStart = textarea.selectionEnd = s + snippet.length;
  textarea.focus();
  textarea.dispatchEvent(new Event('input', { bubbles: true }));
}
