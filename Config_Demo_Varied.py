"""The demo set with its lungs placed anew in each image (position, scale, tilt), written to datasets/DemoVaried.

The same model and training as ``Config_Demo``; only the data differ. In the fixed demo the six lung zones are fixed
boxes, so a model can key a report's zone words to fixed coordinates; here a zone's place must be found in each image,
and a lesion may cross a zone line (docs/LANGUAGE.md).
"""

from Config_Demo import config as demo

config = demo.replace(
    task_name="DemoVaried",
    train_dataset="datasets/DemoVaried/Train_Folder",
    val_dataset="datasets/DemoVaried/Val_Folder",
    test_dataset="datasets/DemoVaried/Test_Folder",
    demo_layout="varied",
)
