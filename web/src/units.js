// Glucose units. Values travel in mg/dL everywhere (store, API, chart JSON); the page shows
// them in the viewer's unit, which the server renders as `<body data-unit="mg/dL">` or
// `<body data-unit="mmol/L">`.

export const MG_DL = 'mg/dL';
export const MMOL_L = 'mmol/L';

/** mg/dL per mmol/L of glucose (molar mass 180.16 g/mol). */
export const MG_DL_PER_MMOL_L = 18.016;

/** The viewer's unit: `mmol/L` when the body says so, otherwise mg/dL. */
export function currentUnit() {
  const unit = document.body ? document.body.dataset.unit : undefined;
  return unit && unit.toLowerCase() === MMOL_L.toLowerCase() ? MMOL_L : MG_DL;
}

/**
 * A mg/dL value in `unit`, rounded as it is shown: whole mg/dL, or mmol/L to one decimal.
 * `null`, `undefined` and non-finite values give `null` (a gap in a chart).
 */
export function convert(mgdl, unit = currentUnit()) {
  if (mgdl === null || mgdl === undefined || !Number.isFinite(mgdl)) return null;
  return unit === MMOL_L ? Math.round((mgdl / MG_DL_PER_MMOL_L) * 10) / 10 : Math.round(mgdl);
}

/** A converted value as text, without the unit: `123` or `6.8`. */
export function formatValue(value, unit = currentUnit()) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  return unit === MMOL_L ? value.toFixed(1) : value.toFixed(0);
}

/** A mg/dL value as the viewer reads it: `123 mg/dL` or `6.8 mmol/L`. */
export function formatGlucose(mgdl, unit = currentUnit()) {
  const v = convert(mgdl, unit);
  return v === null ? '–' : `${formatValue(v, unit)} ${unit}`;
}

/** Sets the text of every `[data-mgdl]` under `root` to its value in the viewer's unit. */
export function applyUnits(root = document) {
  const unit = currentUnit();
  for (const el of root.querySelectorAll('[data-mgdl]')) {
    const raw = el.getAttribute('data-mgdl');
    const mgdl = raw === null || raw.trim() === '' ? NaN : Number(raw);
    if (Number.isFinite(mgdl)) el.textContent = formatGlucose(mgdl, unit);
  }
}
