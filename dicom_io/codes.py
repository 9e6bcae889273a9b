"""Coded concepts used by mccad's result objects (PS3.16 context groups, PS3.3 C.17.3 coded entries).

Standard codes (SNOMED CT "SCT", DICOM "DCM", UCUM) are used wherever one exists. Only concepts no standard names
use our private coding scheme ``99MCCAD`` (PS3.16 section 8.2: designators beginning with "99" are private). Every
private code is listed in ``PRIVATE_CODES`` with its meaning; the scheme is identified in each SR by a Coding
Scheme Identification Sequence item (``coding_scheme_identification()``), so that a reader knows who defines it.

Private scheme 99MCCAD (version 1):

=========  ==========================================================================================
MCC001     (no longer written: a label's confidence is ``models.results.decide`` of Probability of cancer)
MCC002     Probability of invasive carcinoma including microinvasion (vs pure DCIS), paper section 2.8
MCC003     Probability of invasive carcinoma excluding microinvasion (vs DCIS +/- microinvasion)
MCC004     Probability of estrogen receptor positive (paper section 2.8)
MCC005     SPPNet image-level probability of malignancy (paper section 2.5)
MCC010     Bounding box left edge (column), source pixels, exact value of the SCOORD rectangle
MCC011     Bounding box top edge (row)
MCC012     Bounding box right edge (column)
MCC013     Bounding box bottom edge (row)
MCC020     (no longer written: DCM 110910 Pixel Data Rows)
MCC021     (no longer written: DCM 110911 Pixel Data Columns)
MCC022     Heatmap file name (relative to result.json)
MCC023     Image-level assessment (container about one image, under the report's Qualitative Evaluations)
MCC024     Breast-level assessment (container about one breast, paper section 2.7)
MCC025     Exam-level assessment (container about the whole examination)
MCC026     Decided by image (SOP Instance UID of the image that decided a breast verdict)
MCC027     (no longer written: the images of a breast are IMAGE items, DCM 121112 Source of Measurement)
MCC030     Processing warning (for example the NOT FOR CLINICAL USE banner)
MCC031     Exam key (groups images of one screening visit)
MCC032     Result schema version
MCC033     Processing timings (JSON object: step name -> seconds)
MCC034     (no longer written: a model's description is DCM 111002 Algorithm Parameters, a JSON object)
MCC035     Other mammographic view (a view with no code in CID 4014)
MCC040     Calcification descriptors (JSON object: most likely type and distribution and the probabilities of
           every type and distribution, ``models.descriptors.ClusterDescriptors``)
MCC041     Probability of cancer, lower limit of its 95 % interval (from the descriptors)
MCC042     Probability of cancer, upper limit of its 95 % interval (from the descriptors)
MCC043     Detector probability of malignancy (the network's own reading, when the reported one comes from the
           descriptors)
=========  ==========================================================================================

A cluster's BI-RADS calcification type and distribution are also written as standard CODE items: Calcification Type
(DCM 111009) with a CID 6010 value and Calcification Distribution (DCM 111008) with a CID 6012 value, the codes
``models.descriptors`` names for each key.
"""
from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from models.descriptors import DISTRIBUTION_TERMS, TYPE_TERMS

PRIVATE_SCHEME = "99MCCAD"
PRIVATE_SCHEME_VERSION = "1"


def _private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning,
                        scheme_version=PRIVATE_SCHEME_VERSION)


# --- standard concepts ------------------------------------------------------------------------------------------
BREAST_CALCIFICATION = codes.SCT.CalcificationOfBreast            # SCT 309587003
CALCIFICATION_CLUSTER = codes.SCT.CalcificationCluster            # SCT 129769006 (CID 6014)
BENIGN = codes.SCT.Benign                                         # SCT 30807003
MALIGNANT = codes.SCT.Malignant                                   # SCT 21594007
BREAST = codes.SCT.Breast                                         # SCT 76752008
LEFT = codes.SCT.Left
RIGHT = codes.SCT.Right
LATERALITY = codes.SCT.Laterality
BEHAVIOR_OF_FINDING_SITE = codes.DCM.BehaviorOfTheFindingSite    # DCM 125312: benign / malignant
PROBABILITY_OF_CANCER = codes.DCM.ProbabilityOfCancer             # DCM 111047
CERTAINTY_OF_FINDING = codes.DCM.CertaintyOfFinding               # DCM 111012
COMMENT = codes.DCM.Comment                                       # DCM 121106: the label viewers show
FRAME_OF_REFERENCE_UID = codes.DCM.FrameOfReferenceUID            # DCM 112227
RESULT_STUDY_UID = codes.DCM.StudyInstanceUID                     # DCM 110180: the study the result was made for
IMAGE_VIEW = codes.DCM.ImageView                                  # DCM 111031
IMAGE_LATERALITY = codes.DCM.ImageLaterality                      # DCM 111027
RATIO = codes.UCUM.Ratio                                          # UCUM {ratio}
PERCENT = codes.UCUM.Percent
MILLIMETER = codes.UCUM.Millimeter
PIXELS = CodedConcept(value="{pixels}", scheme_designator="UCUM", meaning="pixels")
NO_UNITS = codes.UCUM.NoUnits
# pydicom's dictionary spells these two meanings with a zero-width space after "/", which Latin-1 cannot encode.
INDIVIDUAL_IMPRESSION_RECOMMENDATION = CodedConcept("111034", "DCM", "Individual Impression/Recommendation")
INDIVIDUAL_IMPRESSION_RECOMMENDATION_ANALYSIS = CodedConcept("111233", "DCM",
                                                             "Individual Impression/Recommendation Analysis")
QUALITATIVE_EVALUATIONS = CodedConcept(value="C0034375", scheme_designator="UMLS", meaning="Qualitative Evaluations")

# CID 4014 "View for Mammography": our view names -> SCT codes.
VIEW_CODES: dict[str, CodedConcept] = {
    "CC": CodedConcept("399162004", "SCT", "cranio-caudal"),
    "MLO": CodedConcept("399368009", "SCT", "medio-lateral oblique"),
    "ML": CodedConcept("399260004", "SCT", "medio-lateral"),
    "LM": CodedConcept("399352003", "SCT", "latero-medial"),
    "XCCL": CodedConcept("399192003", "SCT", "cranio-caudal exaggerated laterally"),
    "LMO": CodedConcept("399099002", "SCT", "latero-medial oblique"),
    "SIO": CodedConcept("399188001", "SCT", "superolateral to inferomedial oblique"),
}

# --- private concepts (99MCCAD, documented above) --------------------------------------------------------------
P_INVASIVE_INCL_MICROINVASION = _private("MCC002", "Probability of invasive incl. microinvasion")
P_INVASIVE_EXCL_MICROINVASION = _private("MCC003", "Probability of invasive excl. microinvasion")
P_ER_POSITIVE = _private("MCC004", "Probability of estrogen receptor positive")
SPPNET_PROBABILITY_OF_MALIGNANCY = _private("MCC005", "SPPNet probability of malignancy")
BOX_X0 = _private("MCC010", "Bounding box left column")
BOX_Y0 = _private("MCC011", "Bounding box top row")
BOX_X1 = _private("MCC012", "Bounding box right column")
BOX_Y1 = _private("MCC013", "Bounding box bottom row")
IMAGE_ROWS = codes.DCM.PixelDataRows                              # DCM 110910
IMAGE_COLUMNS = codes.DCM.PixelDataColumns                        # DCM 110911
HEATMAP_FILE = _private("MCC022", "Heatmap file name")
IMAGE_ASSESSMENT = _private("MCC023", "Image-level assessment")
BREAST_ASSESSMENT = _private("MCC024", "Breast-level assessment")
EXAM_ASSESSMENT = _private("MCC025", "Exam-level assessment")
DECIDED_BY_IMAGE = _private("MCC026", "Decided by image")
IMAGE_OF_BREAST = codes.DCM.SourceOfMeasurement                  # DCM 121112, an IMAGE item
WARNING = _private("MCC030", "Processing warning")
EXAM_KEY = _private("MCC031", "Exam key")
SCHEMA_VERSION = _private("MCC032", "Result schema version")
TIMINGS = _private("MCC033", "Processing timings")
MODEL_DESCRIPTION = codes.DCM.AlgorithmParameters                # DCM 111002 (TID 4019), JSON text
OTHER_VIEW = _private("MCC035", "Other mammographic view")
CALCIFICATION_DESCRIPTORS = _private("MCC040", "Calcification descriptors")
P_CANCER_LOW = _private("MCC041", "Probability of cancer, lower 95% limit")
P_CANCER_HIGH = _private("MCC042", "Probability of cancer, upper 95% limit")
NETWORK_PROBABILITY_OF_MALIGNANCY = _private("MCC043", "Detector probability of malignancy")
CALCIFICATION_TYPE = codes.DCM.CalcificationType                 # DCM 111009, value from CID 6010
CALCIFICATION_DISTRIBUTION = codes.DCM.CalcificationDistribution  # DCM 111008, value from CID 6012

PRIVATE_CODES: tuple[CodedConcept, ...] = (
    P_INVASIVE_INCL_MICROINVASION, P_INVASIVE_EXCL_MICROINVASION, P_ER_POSITIVE,
    SPPNET_PROBABILITY_OF_MALIGNANCY, BOX_X0, BOX_Y0, BOX_X1, BOX_Y1, HEATMAP_FILE,
    IMAGE_ASSESSMENT, BREAST_ASSESSMENT, EXAM_ASSESSMENT, DECIDED_BY_IMAGE, WARNING, EXAM_KEY,
    SCHEMA_VERSION, TIMINGS, OTHER_VIEW, CALCIFICATION_DESCRIPTORS, P_CANCER_LOW, P_CANCER_HIGH,
    NETWORK_PROBABILITY_OF_MALIGNANCY)


def calcification_type_code(key: str) -> CodedConcept:
    """The CID 6010 concept of a calcification type key (``models.descriptors.CALCIFICATION_TYPES``)."""
    return CodedConcept(*TYPE_TERMS[key].code)


def calcification_distribution_code(key: str) -> CodedConcept:
    """The CID 6012 concept of a distribution key (``models.descriptors.DISTRIBUTIONS``)."""
    return CodedConcept(*DISTRIBUTION_TERMS[key].code)


def label_code(label: str) -> CodedConcept:
    return CodedConcept.from_code(MALIGNANT if label == "malignant" else BENIGN)


def label_from_code(item: Dataset) -> str:
    """The label ("benign" / "malignant") a coded value stands for; raises ``KeyError`` for anything else."""
    value = (item.CodeValue, item.CodingSchemeDesignator)
    known = {(MALIGNANT.value, MALIGNANT.scheme_designator): "malignant",
             (BENIGN.value, BENIGN.scheme_designator): "benign"}
    return known[value]


def laterality_code(laterality: str | None) -> CodedConcept | None:
    if laterality is None:
        return None
    return CodedConcept.from_code(LEFT if laterality == "L" else RIGHT)


def laterality_from_code(item: Dataset) -> str:
    return {LEFT.value: "L", RIGHT.value: "R"}[item.CodeValue]


def view_code(view: str) -> CodedConcept:
    return VIEW_CODES.get(view, OTHER_VIEW)


def view_from_code(item: Dataset) -> str:
    for name, code in VIEW_CODES.items():
        if code.value == item.CodeValue and code.scheme_designator == item.CodingSchemeDesignator:
            return name
    return "OTHER"


def same_concept(item: Dataset, code: object) -> bool:
    """True when a Code Sequence item (or a ConceptNameCodeSequence item) denotes ``code``."""
    return (getattr(item, "CodeValue", None) == code.value
            and getattr(item, "CodingSchemeDesignator", None) == code.scheme_designator)


def coding_scheme_identification() -> CodingSchemeIdentificationItem:
    """The Coding Scheme Identification Sequence item (PS3.3 C.12.1.1.5) that declares the private scheme."""
    return CodingSchemeIdentificationItem(designator=PRIVATE_SCHEME, name="mccad private codes",
                                          version=PRIVATE_SCHEME_VERSION, responsible_organization="mccad project")
