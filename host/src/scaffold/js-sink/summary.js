// What the sink writes for one record, apart from the bindings so that
// plain Node can test it (`node --test`).

const decoder = new TextDecoder('utf-8', { fatal: true });

/** The fields to log for a payload: its JSON object's fields, as text, and
 *  where it came from. Throws when the payload is not a JSON object. */
export function summarize(payload, topic, offset) {
  const value = JSON.parse(decoder.decode(payload));
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error('the payload is not a JSON object');
  }
  const fields = { topic, offset: String(offset) };
  for (const [key, field] of Object.entries(value)) {
    fields[key] = typeof field === 'string' ? field : JSON.stringify(field);
  }
  return fields;
}
