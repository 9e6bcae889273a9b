// Hydrates a DICOM SR with @cornerstonejs/adapters the way OHIF does (MeasurementReport.generateToolState) and
// prints, as JSON, every annotation it yields: tool, SOP Instance UID, label, tracking UID and the handles in image
// pixels (column, row). Usage: node hydrate_sr.mjs REPORT.dcm
import fs from "node:fs";
import dcmjs from "dcmjs";
import { metaData } from "@cornerstonejs/core";
import { adaptersSR } from "@cornerstonejs/adapters";

const bytes = fs.readFileSync(process.argv[2]);
const dicomData = dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dicomData.dict);

// One image id per SOP instance the SR's evidence names; each image is its own plane with 1 mm pixels, so that
// world (x, y) = (column - 0.5, row - 0.5) and the handles can be read back in pixels.
const imageIds = {};
for (const key of ["CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"]) {
  for (const study of [].concat(dataset[key] || [])) {
    for (const series of [].concat(study.ReferencedSeriesSequence || [])) {
      for (const sop of [].concat(series.ReferencedSOPSequence || [])) {
        imageIds[`${sop.ReferencedSOPInstanceUID}:1`] = `mccad:${sop.ReferencedSOPInstanceUID}`;
      }
    }
  }
}
const plane = (imageId) => imageId && imageId.startsWith("mccad:") ? {
  frameOfReferenceUID: "1.2.3", rowCosines: [1, 0, 0], columnCosines: [0, 1, 0], imagePositionPatient: [0, 0, 0],
  rowPixelSpacing: 1, columnPixelSpacing: 1, rows: 1, columns: 1,
} : undefined;
metaData.addProvider((type, imageId) => (type === "imagePlaneModule" ? plane(imageId) : undefined), 10000);

const MeasurementReport = adaptersSR.Cornerstone3D.MeasurementReport;
const state = MeasurementReport.generateToolState(dataset, imageIds, metaData, {});
const out = [];
for (const [tool, measurements] of Object.entries(state)) {
  for (const m of measurements) {
    out.push({
      tool, sopInstanceUid: m.sopInstanceUid, label: m.annotation.data.label ?? null,
      description: m.description ?? null, trackingUid: m.TrackingUniqueIdentifier ?? null,
      points: (m.annotation.data.handles.points || []).map((p) => [p[0] + 0.5, p[1] + 0.5]),
    });
  }
}
process.stdout.write(JSON.stringify(out));
