"""Reading a competition and turning its images into tensors.

Owns: `reading` (the four input layouts, the sample table, the task kind the labels make plain,
`open_competition` with the settings the folds recorded, the probability hint of a
log-loss sample), `kinds` (what a label is when --task is auto: tags or class names, a quantity or
class ids), `files` (the folder's files below the layouts: ids to paths, file checks, array
files, pixel CSVs), `copies` (exact and hash duplicates: hashes, pairs, clusters), `images` (decoding and the one preparation every step gives an image), `store`
(the decoded-image store on disk), `dataset` (torch datasets, sources, the epoch order),
`augment` (named presets as torchvision v2 pipelines), `batchaug` (the presets on whole batches
on the training device), `demo` (the embedded digits competition), `download` (a list of image
URLs into a competition folder: the journal, resume, duplicates, shares) over `fetch` (its HTTP client:
per-host limits, retries, the safety checks).
May import: the ground floor and runtime/.
"""
