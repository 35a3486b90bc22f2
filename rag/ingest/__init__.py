"""Documents in as people have them: PDF, DOCX, HTML, TXT/MD bytes -> extracted pages.

Owns: format sniffing (``sniff``), extraction per format (``pdf``, ``docx``,
``html``, ``ocr``), and the on-disk registry of uploaded documents
(``store``). Nothing here loads a model at import; OCR loads its models on
first use.
"""
